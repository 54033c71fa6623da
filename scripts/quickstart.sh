#!/usr/bin/env bash
# Sets up .venv (CPU build of vLLM + this package with the serve extra only) and starts
# sambay-serve. With no model it serves a tiny SambaY checkpoint generated on first start (CPU,
# float32); extra arguments go to sambay-serve (vLLM's serve flags plus --max-pending, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh serve
exec "${VENV:-.venv}/bin/sambay-serve" "$@"
