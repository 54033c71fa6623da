"""Latency vs generation length at C = 1 (the paper's second figure), offline engine.

One request generating max(gen_lens) tokens; the latency for length g is the time of its g-th
token (the same as a request stopped at g: nothing else runs at C = 1).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sambay_client.workload import PAPER, PAPER_GEN_LENS

from ..driver import OfflineRun, OutOfTime, emit
from ..mode import OFFLINE, Mode, Option, int_list
from ..tables import pair_table


def run(ctx: OfflineRun, prompt_len: int, gen_lens: list[int], max_model_len: int, budget_s: float) -> None:
    deadline = time.perf_counter() + budget_s
    gen_lens = sorted(gen_lens)
    fits = [g for g in gen_lens if prompt_len + g <= max_model_len]
    for g in sorted(set(gen_lens) - set(fits)):
        emit(
            "skip",
            mode="genlen",
            point={"model": ctx.model, "gen_len": g},
            reason=f"prompt {prompt_len} + {g} exceeds max_model_len {max_model_len}",
        )
    if not fits:
        return
    ctx.d.add(prompt_len, fits[-1])
    t0 = time.perf_counter()
    produced, ttft, pending = 0, None, list(fits)
    every, reported = max(1, fits[-1] // 100), 0
    try:
        while pending:
            ctx.check(deadline)
            produced += sum(ctx.d.step().values())
            now = time.perf_counter() - t0
            if produced and ttft is None:
                ttft = now
            while pending and produced >= pending[0]:
                g = pending.pop(0)
                emit(
                    "point",
                    mode="genlen",
                    point={
                        "model": ctx.model,
                        "prompt_len": prompt_len,
                        "gen_len": g,
                        "latency_s": now,
                        "ttft_s": ttft,
                        "gen_latency_s": now - ttft,
                        "ms_per_token": (now - ttft) / max(g - 1, 1) * 1e3,
                    },
                )
            if produced - reported >= every:
                reported = produced
                emit("progress", mode="genlen", model=ctx.model, n=produced, total=fits[-1], desc="tokens")
    except OutOfTime:
        for g in pending:
            emit(
                "skip",
                mode="genlen",
                point={"model": ctx.model, "gen_len": g},
                reason=f"time budget ran out at {produced} tokens",
            )
    ctx.d.abort_all()


def brief(p: dict[str, Any]) -> str:
    return f"gen {p['gen_len']}: {p['latency_s']:.2f} s (TTFT {p['ttft_s'] * 1e3:.0f} ms)"


def table(doc: dict[str, Any]) -> str:
    head = ["generated", "SambaY s", "dense s", "dense / SambaY"]
    return pair_table(doc, "genlen", "gen_len", "latency_s", head, ".2f")


def plot(doc: dict[str, Any], path: Path, title: str) -> Path | None:
    from ..plots import pair_plot

    return pair_plot(doc, path, title, "genlen", "gen_len", "latency_s", "generated tokens", "latency (s)")


POINT = {
    "type": "object",
    "required": ["model", "prompt_len", "gen_len", "latency_s", "ttft_s", "gen_latency_s"],
    "properties": {
        "model": {"$ref": "#/$defs/model"},
        "gen_len": {"type": "integer", "minimum": 1},
        "latency_s": {"$ref": "#/$defs/positive"},
        "ttft_s": {"$ref": "#/$defs/positive"},
    },
}

MODE = Mode(
    name="genlen",
    title="Latency vs generation length (C = 1)",
    runs_in=OFFLINE,
    options=(
        # the paper's lengths, and 1000 between its first two
        Option(
            "gen_lens", int_list, "generation lengths", full=sorted({1000, *PAPER_GEN_LENS}), tiny=[16, 32, 64, 128]
        ),
        Option("genlen_prompt_len", int, "prompt tokens", full=PAPER.prompt_tokens, tiny=48),
    ),
    run=run,
    params=lambda s: {"prompt_len": s["genlen_prompt_len"], "gen_lens": s["gen_lens"]},
    point_schema=POINT,
    brief=brief,
    table=table,
    plot=plot,
)
