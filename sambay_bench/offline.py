"""The offline-engine worker for one model: ``python -m sambay_bench.offline SPEC.json``.

Each model gets a process of its own, so each gets a clean GPU and a crash or an OOM costs one
model, not the run. The worker starts vLLM's engine in this process (see ``driver``) and runs the
offline modes the spec names, each by its registry entry's ``run``. Results go to stdout as event
lines (``results.event_line``); vLLM's own log goes along.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from .driver import EngineDriver, OfflineRun, emit
from .modes import MODES
from .roofline import decode_bytes, hbm_tbps


def environment() -> dict[str, Any]:
    import torch
    import vllm

    from vllm_sambay import __version__

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {
        "device": "cuda" if gpu else "cpu",
        "gpu": gpu,
        "vllm": vllm.__version__,
        "torch": torch.__version__,
        "vllm_sambay": __version__,
        "cuda": torch.version.cuda,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(argv[0]).read_text())
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    from vllm import LLM

    env = environment()
    tbps = spec.get("hbm_tbps") or hbm_tbps(env["gpu"])
    cost = decode_bytes(spec["model"], spec["size"], dtype_bytes=spec["dtype_bytes"])
    emit("environment", model=spec["model"], environment={**env, "hbm_tbps": tbps})
    t0 = time.perf_counter()
    llm = LLM(**spec["engine"], skip_tokenizer_init=True)
    emit("engine", model=spec["model"], start_s=time.perf_counter() - t0)
    ctx = OfflineRun(EngineDriver(llm, spec["vocab_size"]), spec["model"], cost, tbps)
    for mode, kwargs in spec["modes"].items():
        MODES[mode].run(ctx, **kwargs)
    emit("done", model=spec["model"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
