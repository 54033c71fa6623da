"""lm-evaluation-harness task definitions (``sambay_*.yaml``); ``python -m sambay_eval.tasks`` prints
this directory for ``lm_eval --include_path``."""

from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent
