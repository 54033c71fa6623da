#!/usr/bin/env bash
# sambay-bench on the GPU host (vLLM 0.26.0 in the host venv, this tree on PYTHONPATH). Each part
# writes a run directory under $OUT (bench.json, bench.log, logs/, summary.md, PNGs).
#   bash scripts/gpu/bench.sh offline   # modes 2-4: decode sweep, latency vs generation length, TTFT
#   bash scripts/gpu/bench.sh serve     # mode 1: closed-loop clients through vLLM's OpenAI server
#   bash scripts/gpu/bench.sh fp8       # decode B=1 at 2K and 8K + TTFT 2K, SambaY bf16 vs online FP8
# Budgets are per mode and model, engine start-up excluded (full size with CUDA graphs: ~1.5 min per
# engine); the JSON lists every point a budget cut. Knobs: BUDGET_S, SERVE_BUDGET_S, CONCURRENCY,
# SERVE_OUTPUT_LEN, SERVE_REQUESTS_PER_CLIENT, BATCHES, CONTEXTS, GEN_LENS, MAX_MODEL_LEN, GPU_UTIL,
# CAPTURE_SIZES.
set -uo pipefail
PY=${PY:-/opt/torch/.venv/bin/python3}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export VLLM_USE_FLASHINFER_SAMPLER=0 VLLM_NO_USAGE_STATS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
export PYTHONPATH=${PYTHONPATH:-$PWD}
# CUDA graphs only for the batch sizes the sweep and the clients use: a shorter start than vLLM's
# default list of sizes (each full-size engine start is what the device budget pays most for).
CAPTURE=${CAPTURE_SIZES:-1,2,4,8,16,32,64,128,256}
common=(--gpu-memory-utilization "${GPU_UTIL:-0.9}" --max-model-len "${MAX_MODEL_LEN:-40960}"
        --engine-arg "compilation_config={\"cudagraph_capture_sizes\": [$CAPTURE]}")
for part in "$@"; do
  case $part in
    offline)
      "$PY" -m sambay_bench.cli run --out "$OUT/bench-offline" --modes decode,genlen,ttft "${common[@]}" \
        --time-budget-s "${BUDGET_S:-60}" --batches "${BATCHES:-1,16,64,256}" \
        --contexts "${CONTEXTS:-2048,8192,16384,32768}" --gen-lens "${GEN_LENS:-500,1000,2000,4000,8000,16000,32000}"
      echo "rc=$?" ;;
    serve)
      "$PY" -m sambay_bench.cli run --out "$OUT/bench-serve" --modes serve "${common[@]}" \
        --time-budget-s "${SERVE_BUDGET_S:-240}" --concurrency "${CONCURRENCY:-1,4,16}" \
        --output-len "${SERVE_OUTPUT_LEN:-2000}" --requests-per-client "${SERVE_REQUESTS_PER_CLIENT:-1}"
      echo "rc=$?" ;;
    fp8)
      for q in bf16 fp8; do
        extra=()
        [ "$q" = fp8 ] && extra=(--engine-arg sambay:quantization=fp8)
        "$PY" -m sambay_bench.cli run --out "$OUT/bench-$q" --models sambay --modes decode,ttft "${common[@]}" \
          "${extra[@]}" --time-budget-s "${BUDGET_S:-60}" --batches 1 --contexts "${CONTEXTS:-2048,8192}" \
          --ttft-prompt-lens 2048 --ttft-repeats 2
        echo "rc=$? ($q)"
      done ;;
    *) echo "unknown part $part (offline, serve, fp8)" ;;
  esac
done
