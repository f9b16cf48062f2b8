#!/usr/bin/env bash
# Engine speed on real checkpoint shapes, on a GPU machine with no network: one command, ≤ 5 minutes.
#
#   scripts/bench-on-gpu.sh OUTDIR
#
# Needs only this working tree and the machine's python3 with torch, transformers, tokenizers and
# safetensors.  Benchmarks the config-only checkpoints in infill_engine/pipeline/shapes/
# (Qwen2-0.5B and Qwen2-7B layouts, LLaDA-8B) with random bf16 weights built on the GPU: a 64-token
# infill at ~1k context, vanilla vs context cache vs 4 tokens a step vs threshold, batch 1 vs 8,
# printed as ratios (`diffill bench --model DIR`).  Then, in a run of its own so that compiling can
# never cost the eager table, the cache fixed-4 step compiled (`--compile MODE --compiled-only`,
# batch 1 and 8): inductor + CUDA graphs (reduce-overhead) for the 0.5B shape, the eager kernels
# as CUDA graphs (cudagraphs, compiles in seconds) for the big ones.  Each run gets what is left of
# BUDGET seconds (at most STEP_TIMEOUT); one with under 20 s left is skipped and says so.
# OUTDIR gets NAME.txt and NAME-compiled.txt per shape, and gpu.txt.
# Overrides: DEVICE (cuda), CONTEXT (1024), HOLE (64), REPEATS (1), STEP_TIMEOUT (110), BUDGET (285),
# COMPILE (0.5B shape's mode), COMPILE_LARGE (the others'; "none" skips), SHAPES (checkpoint
# directories, space-separated) — the CPU test runs tiny shapes through here.
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
started=$SECONDS

run() {  # run FILE ARGS...: one bench invocation within what is left of the budget
  local file=$1; shift
  local left=$(( ${BUDGET:-285} - (SECONDS - started) ))
  local limit=$(( left < ${STEP_TIMEOUT:-110} ? left : ${STEP_TIMEOUT:-110} ))
  if [ "$limit" -lt 20 ]; then
    echo "bench-on-gpu: $(basename "$file" .txt) skipped, ${left}s of the budget left" | tee "$file"
    return
  fi
  timeout "$limit" "${PYTHON:-python3}" -m infill_engine.pipeline.bench --device "${DEVICE:-cuda}" \
      --context "${CONTEXT:-1024}" --hole "${HOLE:-64}" --repeats "${REPEATS:-1}" "$@" > "$file" 2>&1
  local rc=$?
  cat "$file"
  if [ $rc -ne 0 ]; then echo "bench-on-gpu: $(basename "$file" .txt) exited $rc" | tee -a "$file"; status=$rc; fi
}

for shape in $SHAPES; do
  name=$(basename "$shape")
  # Eager: the 0.5B shape takes seconds; the 7B/8B ones about a minute (8-row batches dominate).
  run "$out/$name.txt" --model "$shape"
  case $name in *0.5b*) mode=${COMPILE:-reduce-overhead} ;; *) mode=${COMPILE_LARGE:-cudagraphs} ;; esac
  if [ "$mode" != none ]; then
    run "$out/$name-compiled.txt" --model "$shape" --compile "$mode" --compiled-only
  fi
done
exit $status
