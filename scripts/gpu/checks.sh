#!/usr/bin/env bash
# GPU checks on the lent GPU (vLLM 0.26.0 in the host venv); logs and JSON go to $OUT.
#   bash scripts/gpu/checks.sh fp32-eager fp32-torchops bf16-graphs fp32-graphs bf16-fastprefill fp8-graphs smoke triton micro
# fp8-*: vLLM's online FP8 (--quantization fp8: per-tensor weights, dynamic activations) on every linear
# layer the plugin quantizes, Mamba in_proj/out_proj included; the reference keeps the bf16 checkpoint's
# weights, so the JSON reports FP8's error (expect token agreement < 1), and rc != 0 means it did not run.
# Model Runner V2 (VLLM_USE_V2_MODEL_RUNNER=1; 0.26 keeps hybrids on V1 otherwise, and its V2 refuses
# --kv-sharing-fast-prefill, so there is no fast-prefill variant):
#   bash scripts/gpu/checks.sh fp32-eager-mrv2 fp32-graphs-mrv2 bf16-graphs-mrv2
set -uo pipefail
PY=${PY:-/opt/torch/.venv/bin/python3}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export VLLM_USE_FLASHINFER_SAMPLER=0 VLLM_NO_USAGE_STATS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$OUT/gpu.txt"
TINY=${TINY:-/root}  # where the tiny checkpoints are written (a dry run elsewhere sets it)
[ -d "$TINY/tiny32" ] || "$PY" -m vllm_sambay.testing.tiny "$TINY/tiny32" --dtype float32 >/dev/null
[ -d "$TINY/tiny16" ] || "$PY" -m vllm_sambay.testing.tiny "$TINY/tiny16" --dtype bfloat16 >/dev/null
for name in "$@"; do
  v2='' quant=''
  case $name in
    fp32-eager-mrv2)  ckpt=$TINY/tiny32 dtype=float32  flag=--enforce-eager ops=auto v2=1 ;;
    fp32-graphs-mrv2) ckpt=$TINY/tiny32 dtype=float32  flag='' ops=auto v2=1 ;;
    bf16-graphs-mrv2) ckpt=$TINY/tiny16 dtype=bfloat16 flag='' ops=auto v2=1 ;;
    fp32-eager)    ckpt=$TINY/tiny32 dtype=float32  flag=--enforce-eager ops=auto ;;
    fp32-torchops) ckpt=$TINY/tiny32 dtype=float32  flag=--enforce-eager ops=torch ;;
    fp32-graphs)   ckpt=$TINY/tiny32 dtype=float32  flag='' ops=auto ;;
    bf16-eager)    ckpt=$TINY/tiny16 dtype=bfloat16 flag=--enforce-eager ops=auto ;;
    bf16-graphs)   ckpt=$TINY/tiny16 dtype=bfloat16 flag='' ops=auto ;;
    fp32-fastprefill) ckpt=$TINY/tiny32 dtype=float32 flag=--kv-sharing-fast-prefill ops=auto ;;
    bf16-fastprefill) ckpt=$TINY/tiny16 dtype=bfloat16 flag=--kv-sharing-fast-prefill ops=auto ;;
    fp8-eager)     ckpt=$TINY/tiny16 dtype=bfloat16 flag=--enforce-eager ops=auto quant=fp8 ;;
    fp8-graphs)    ckpt=$TINY/tiny16 dtype=bfloat16 flag='' ops=auto quant=fp8 ;;
    triton)
      echo "== fused Triton decode kernel, compiled (not interpreted), fp32/fp16/bf16"
      TRITON_INTERPRET=0 "$PY" -m pytest -q -p no:cacheprovider tests/unit/triton_kernel_cases.py \
        > "$OUT/triton-kernel.log" 2>&1
      echo "rc=$?"; tail -5 "$OUT/triton-kernel.log"
      continue ;;
    micro)
      echo "== decode attention micro-benchmark (packed / four calls / fused / roofline)"
      timeout "${MICRO_TIMEOUT:-500}" "$PY" benchmarks/diff_attention_micro.py "$OUT" ${MICRO_POINTS:+--points "$MICRO_POINTS"} \
        > "$OUT/diff-attention-micro.log" 2>&1
      echo "rc=$?"; grep -E '^\{' "$OUT/diff-attention-micro.log" | tail -9
      continue ;;
    smoke)
      echo "== full-size smoke (dummy weights, default compilation + CUDA graphs)"
      timeout "${SMOKE_TIMEOUT:-420}" "$PY" scripts/gpu/full_size_smoke.py "$OUT/full-size-smoke.json" \
        > "$OUT/full-size-smoke.log" 2>&1
      echo "rc=$?"; grep -E '^\{' "$OUT/full-size-smoke.log" || tail -40 "$OUT/full-size-smoke.log"
      continue ;;
    *) echo "unknown check $name"; continue ;;
  esac
  echo "== parity $name"
  env SAMBAY_MAMBA_OPS="$ops" ${v2:+VLLM_USE_V2_MODEL_RUNNER=$v2} timeout "${PARITY_TIMEOUT:-200}" \
    "$PY" -m vllm_sambay.testing.parity "$ckpt" --dtype "$dtype" ${flag:+"$flag"} ${quant:+--quantization "$quant"} \
    --reference-dtype float32 --output "$OUT/parity-$name.json" > "$OUT/parity-$name.log" 2>&1
  echo "rc=$?"
  grep -E '"(token_agreement|max_logprob_error|greedy_identical|engine_start_s|model_runner_v2|quantization)"' "$OUT/parity-$name.json" 2>/dev/null \
    || grep -E "Error|error|Traceback" "$OUT/parity-$name.log" | tail -8; tail -12 "$OUT/parity-$name.log"
done
