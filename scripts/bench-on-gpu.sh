#!/usr/bin/env bash
# Engine speed on real checkpoint shapes, on a GPU machine with no network: one command, ≤ 5 minutes.
#
#   scripts/bench-on-gpu.sh OUTDIR
#
# Needs only this working tree and the machine's python3 with torch, transformers, tokenizers and
# safetensors.  Benchmarks the config-only checkpoints in infill_engine/pipeline/shapes/
# (Qwen2-0.5B and Qwen2-7B layouts, LLaDA-8B) with random bf16 weights built on the GPU: a 64-token
# infill at ~1k context, vanilla vs context cache vs 4 tokens a step vs threshold, batch 1 vs 8,
# printed as ratios (`diffill bench --model DIR`).  OUTDIR gets one table per shape and gpu.txt.
# Overrides: DEVICE (cuda), CONTEXT (1024), HOLE (64), REPEATS (2), STEP_TIMEOUT (seconds per shape),
# SHAPES (checkpoint directories, space-separated) — the CPU test runs tiny shapes through here.
set -uo pipefail
out=${1:?usage: scripts/bench-on-gpu.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
shapes_dir=infill_engine/pipeline/shapes
SHAPES=${SHAPES:-"$shapes_dir/qwen2-0.5b $shapes_dir/qwen2-7b $shapes_dir/llada-8b"}
(nvidia-smi -L 2>&1 || echo "no nvidia-smi") > "$out/gpu.txt"
status=0
for shape in $SHAPES; do
  name=$(basename "$shape")
  # 0.5B takes seconds; the 7B/8B shapes about 1.5 minutes each (8-row batches dominate).
  timeout "${STEP_TIMEOUT:-120}" "${PYTHON:-python3}" -m infill_engine.pipeline.bench --model "$shape" \
      --device "${DEVICE:-cuda}" --context "${CONTEXT:-1024}" --hole "${HOLE:-64}" --repeats "${REPEATS:-2}" \
      > "$out/$name.txt" 2>&1
  rc=$?
  cat "$out/$name.txt"
  if [ $rc -ne 0 ]; then echo "bench-on-gpu: $name exited $rc" | tee -a "$out/$name.txt"; status=$rc; fi
done
exit $status
