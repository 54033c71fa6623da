#!/usr/bin/env bash
# Sets up .venv (CPU build of vLLM + this package), writes a tiny SambaY checkpoint and serves a
# few prompts from it through the real vLLM engine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}
.venv/bin/python -m vllm_sambay.demo "${@}"
