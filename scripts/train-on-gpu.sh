#!/usr/bin/env bash
# Train diffill's models on a GPU machine with no network, in one command of under 10 minutes.
#
#   scripts/train-on-gpu.sh OUTDIR [extra gpu_run options, e.g. --minutes 6.5]
#
# Needs only this working tree and the token shards in data/gpu-shards (≤ 40 MiB, made here by
# `diffill shards --tokenizer data/shards/tokenizer.json --max-mib 40 --out data/gpu-shards`),
# and the machine's own python3 with torch.  HumanEval-Infilling is read from
# $DIFFILL_HUMANEVAL_DIR, or shared/data/humaneval-infilling inside the tree.  OUTDIR gets the
# weights (files < 16 MiB) and report.json; `python -m infill_engine.pipeline.gpu_run unpack
# OUTDIR` turns them into model folders back home.
set -euo pipefail
out=${1:?usage: scripts/train-on-gpu.sh OUTDIR [gpu_run options]}
shift
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" -m infill_engine.pipeline.gpu_run run "$out" "$@"
