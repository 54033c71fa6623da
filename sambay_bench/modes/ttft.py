"""Prefill alone: time from adding a request to its first token, alone in the offline engine.

One unmeasured request per length first (kernels are compiled per shape), then the median of
``ttft_repeats``.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from ..driver import OfflineRun, OutOfTime, emit
from ..mode import OFFLINE, Mode, Option, int_list
from ..tables import pair_table


def run(ctx: OfflineRun, prompt_lens: list[int], repeats: int, max_model_len: int, budget_s: float) -> None:
    deadline = time.perf_counter() + budget_s
    for i, length in enumerate(sorted(prompt_lens)):
        emit("progress", mode="ttft", model=ctx.model, n=i, total=len(prompt_lens), desc=f"prompt {length}")
        where = {"model": ctx.model, "prompt_len": length}
        if length + 1 > max_model_len:
            emit("skip", mode="ttft", point=where, reason=f"prompt {length} exceeds max_model_len {max_model_len}")
            continue
        samples: list[float] = []
        try:
            for r in range(repeats + 1):
                ctx.check(deadline)
                t0 = time.perf_counter()
                ctx.d.add(length, 1)
                while ctx.d.live:
                    ctx.check(deadline)
                    ctx.d.step()
                if r:
                    samples.append((time.perf_counter() - t0) * 1e3)
        except OutOfTime:
            ctx.d.abort_all()
        if not samples:
            emit("skip", mode="ttft", point=where, reason="time budget ran out")
            continue
        median = statistics.median(samples)
        emit(
            "point",
            mode="ttft",
            point={**where, "ttft_ms": median, "ttft_ms_samples": samples, "prefill_tok_s": length / median * 1e3},
        )
    emit("progress", mode="ttft", model=ctx.model, n=len(prompt_lens), total=len(prompt_lens), desc="done")


def brief(p: dict[str, Any]) -> str:
    return f"prompt {p['prompt_len']}: TTFT {p['ttft_ms']:.1f} ms"


def table(doc: dict[str, Any]) -> str:
    head = ["prompt", "SambaY ms", "dense ms", "dense / SambaY"]
    return pair_table(doc, "ttft", "prompt_len", "ttft_ms", head, ".1f")


def plot(doc: dict[str, Any], path: Path, title: str) -> Path | None:
    from ..plots import pair_plot

    return pair_plot(doc, path, title, "ttft", "prompt_len", "ttft_ms", "prompt tokens", "TTFT (ms)")


POINT = {
    "type": "object",
    "required": ["model", "prompt_len", "ttft_ms", "ttft_ms_samples"],
    "properties": {
        "model": {"$ref": "#/$defs/model"},
        "prompt_len": {"type": "integer", "minimum": 1},
        "ttft_ms": {"$ref": "#/$defs/positive"},
        "ttft_ms_samples": {"type": "array", "items": {"$ref": "#/$defs/positive"}, "minItems": 1},
    },
}

MODE = Mode(
    name="ttft",
    title="TTFT (C = 1)",
    runs_in=OFFLINE,
    options=(
        Option("ttft_prompt_lens", int_list, "prompt lengths", full=[2048, 8192, 32768], tiny=[64, 256, 1024]),
        Option("ttft_repeats", int, "measured repeats per length", full=3, tiny=2),
    ),
    run=run,
    params=lambda s: {"prompt_lens": s["ttft_prompt_lens"], "repeats": s["ttft_repeats"]},
    point_schema=POINT,
    brief=brief,
    table=table,
    plot=plot,
)
