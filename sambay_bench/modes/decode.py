"""Decode sweep: ms per decode step at batch B and context L, beside the HBM roofline of the step.

Offline engine, timed engine steps. Prompts are ``context - warmup - steps/2`` long, so the timed
steps are centred on ``context``. When the KV cache cannot hold the batch, the point runs with as
many as the scheduler admits and says so (``batch_running``, ``limited_by``).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

from ..driver import OfflineRun, OutOfTime, emit
from ..mode import OFFLINE, Mode, Option, int_list
from ..roofline import roofline_ms
from ..tables import markdown_table, num, points, ratio, times


def run(
    ctx: OfflineRun,
    batches: list[int],
    contexts: list[int],
    steps: int,
    warmup_steps: int,
    max_model_len: int,
    budget_s: float,
) -> None:
    deadline = time.perf_counter() + budget_s
    grid = sorted(((b, c) for b in batches for c in contexts), key=lambda p: (p[0] * p[1], p[0]))
    measured: list[dict[str, Any]] = []
    prefill_tok_s: float | None = None
    for i, (batch, context) in enumerate(grid):
        emit("progress", mode="decode", model=ctx.model, n=i, total=len(grid), desc=f"B={batch} L={context}")
        prompt_len = context - warmup_steps - steps // 2
        where = {"model": ctx.model, "batch": batch, "context": context}
        if prompt_len < 1:
            emit("skip", mode="decode", point=where, reason=f"context {context} is shorter than the steps")
            continue
        if context + steps > max_model_len:
            emit("skip", mode="decode", point=where, reason=f"context {context} exceeds max_model_len {max_model_len}")
            continue
        left = deadline - time.perf_counter()
        guess = _time_guess(ctx, batch, context, prompt_len, steps + warmup_steps, measured, prefill_tok_s)
        if guess is not None and guess > left:
            emit(
                "skip",
                mode="decode",
                point=where,
                reason=f"time budget: needs ~{guess:.0f} s, {max(left, 0):.0f} s left",
            )
            continue
        try:
            point = _point(ctx, batch, context, prompt_len, steps, warmup_steps, max_model_len, deadline)
        except OutOfTime:
            ctx.d.abort_all()
            emit("skip", mode="decode", point=where, reason="time budget ran out during the point")
            continue
        measured.append(point)
        if point["prefill_s"] > 0:
            rate = point["batch_running"] * prompt_len / point["prefill_s"]
            prefill_tok_s = max(prefill_tok_s or 0.0, rate)
        emit("point", mode="decode", point=point)
    emit("progress", mode="decode", model=ctx.model, n=len(grid), total=len(grid), desc="done")


def _time_guess(ctx, batch, context, prompt_len, steps, measured, prefill_tok_s) -> float | None:
    """Prefill at the best rate seen so far plus steps costed by bytes read, scaled from the last
    (largest, so nearest) point measured; None before anything was measured."""
    if not measured or not prefill_tok_s:
        return None
    last = measured[-1]
    ms = (
        last["ms_per_step"]
        * ctx.cost.per_step(batch, context)
        / ctx.cost.per_step(last["batch_running"], last["context"])
    )
    return batch * prompt_len / prefill_tok_s + steps * ms / 1e3


def _point(ctx: OfflineRun, batch, context, prompt_len, steps, warmup_steps, max_model_len, deadline) -> dict[str, Any]:
    """Requests may generate up to max_model_len, so none finishes inside the point, however long
    the others take to prefill (early starters decode meanwhile); all are aborted at its end.
    ``context_mean`` is the measured mean context at the middle of the timed steps."""
    d = ctx.d
    for _ in range(batch):
        d.add(prompt_len, max_model_len - prompt_len)
    generated: Counter[str] = Counter()
    t0 = time.perf_counter()
    limited_by, stuck = None, 0
    while len(generated) < batch:
        ctx.check(deadline)
        generated.update(d.step())
        view = d.scheduler()
        # Nobody prefilling while requests wait: the scheduler could not admit them.
        if view is not None and view.waiting and not view.prefilling and len(generated) >= view.running:
            stuck += 1
            if stuck >= 3:
                limited_by = "max_num_seqs" if view.running >= d.max_num_seqs else "kv_capacity"
                break
        else:
            stuck = 0
    prefill_s = time.perf_counter() - t0
    for _ in range(warmup_steps):
        ctx.check(deadline)
        generated.update(d.step())
    before = dict(generated)
    tokens = 0
    t0 = time.perf_counter()
    for _ in range(steps):
        ctx.check(deadline)
        new = d.step()
        generated.update(new)
        tokens += sum(new.values())
    elapsed = time.perf_counter() - t0
    d.abort_all()
    in_window = [r for r in generated if generated[r] > before.get(r, 0)]
    midpoints = [(before.get(r, 0) + generated[r]) / 2 for r in in_window]
    context_mean = prompt_len + sum(midpoints) / max(len(midpoints), 1)
    running = round(tokens / steps)
    ms = elapsed / steps * 1e3
    step_bytes = ctx.cost.per_step(running, round(context_mean))
    roof = roofline_ms(step_bytes, ctx.tbps)
    return {
        "model": ctx.model,
        "batch": batch,
        "context": context,
        "prompt_len": prompt_len,
        "context_mean": context_mean,
        "batch_running": running,
        "limited_by": limited_by,
        "steps": steps,
        "ms_per_step": ms,
        "tok_s": tokens / elapsed,
        "prefill_s": prefill_s,
        "bytes_per_step": step_bytes,
        "roofline_ms": roof,
        "roofline_fraction": roof / ms if roof else None,
    }


def brief(p: dict[str, Any]) -> str:
    roof = f", roofline {p['roofline_ms']:.2f} ms ({p['roofline_fraction']:.0%})" if p.get("roofline_ms") else ""
    lim = f" of {p['batch']} ({p['limited_by']})" if p.get("limited_by") else ""
    return f"B={p['batch_running']}{lim} L={p['context']}: {p['ms_per_step']:.2f} ms/step, {p['tok_s']:.0f} tok/s{roof}"


def table(doc: dict[str, Any]) -> str:
    pts = points(doc, "decode")
    by = {(p["model"], p["batch"], p["context"]): p for p in pts}
    rows = []
    for b, ctx in sorted({(p["batch"], p["context"]) for p in pts}):
        s, d = by.get(("sambay", b, ctx), {}), by.get(("dense", b, ctx), {})

        def cell(p: dict[str, Any]) -> list[str]:
            if not p:
                return ["–", "–", "–"]
            ran = "" if p["batch_running"] == p["batch"] else f" (B={p['batch_running']})"
            return [num(p["ms_per_step"]) + ran, num(p.get("roofline_ms")), num(p.get("roofline_fraction"), ".0%")]

        rows.append([str(b), str(ctx), *cell(s), *cell(d), times(ratio(s.get("tok_s"), d.get("tok_s")))])
    head = [
        "B",
        "context",
        "ms/step SambaY",
        "roofline ms",
        "of roofline",
        "ms/step dense",
        "roofline ms",
        "of roofline",
        "tok/s ratio",
    ]
    return markdown_table(head, rows)


def plot(doc: dict[str, Any], path: Path, title: str) -> Path | None:
    from ..plots import COLOR, LABEL, integer_ticks, models_of, plain_log_labels, pyplot, save

    pts = points(doc, "decode")
    if not pts:
        return None
    plt = pyplot()
    contexts = sorted({p["context"] for p in pts})
    fig, axes = plt.subplots(1, len(contexts), figsize=(3.6 * len(contexts), 3.8), squeeze=False)
    for ax, ctx in zip(axes[0], contexts, strict=True):
        for m in models_of(pts):
            mp = sorted((p for p in pts if p["model"] == m and p["context"] == ctx), key=lambda p: p["batch"])
            if not mp:
                continue
            x = [p["batch_running"] for p in mp]
            ax.plot(x, [p["ms_per_step"] for p in mp], "o-", color=COLOR[m], label=LABEL[m])
            if any(p.get("roofline_ms") for p in mp):
                ax.plot(
                    x,
                    [p.get("roofline_ms") for p in mp],
                    "--",
                    color=COLOR[m],
                    alpha=0.6,
                    label=f"{LABEL[m]} roofline",
                )
        ax.set(xscale="log", yscale="log", xlabel="sequences decoding", title=f"context {ctx}")
        integer_ticks(ax.xaxis, sorted({p["batch_running"] for p in pts if p["context"] == ctx}))
        plain_log_labels(ax.yaxis)
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("ms per decode step")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"decode step time, {title}")
    return save(fig, path)


POINT = {
    "type": "object",
    "required": [
        "model",
        "batch",
        "context",
        "context_mean",
        "batch_running",
        "limited_by",
        "steps",
        "ms_per_step",
        "tok_s",
        "prefill_s",
        "bytes_per_step",
        "roofline_ms",
        "roofline_fraction",
    ],
    "properties": {
        "model": {"$ref": "#/$defs/model"},
        "batch": {"type": "integer", "minimum": 1},
        "context": {"type": "integer", "minimum": 1},
        "context_mean": {"$ref": "#/$defs/positive"},
        "batch_running": {"type": "integer", "minimum": 1},
        "limited_by": {"enum": [None, "kv_capacity", "max_num_seqs"]},
        "ms_per_step": {"$ref": "#/$defs/positive"},
        "tok_s": {"$ref": "#/$defs/positive"},
        "bytes_per_step": {"type": "integer", "minimum": 1},
        "roofline_ms": {"type": ["number", "null"]},
        "roofline_fraction": {"type": ["number", "null"]},
    },
}

MODE = Mode(
    name="decode",
    title="Decode sweep (offline engine)",
    runs_in=OFFLINE,
    options=(
        Option("batches", int_list, "batch sizes B", full=[1, 16, 64, 256], tiny=[1, 4, 16]),
        Option("contexts", int_list, "contexts L in tokens", full=[2048, 8192, 16384, 32768], tiny=[64, 256]),
        Option("decode_steps", int, "timed steps per point", full=32, tiny=8),
        Option("decode_warmup_steps", int, "untimed steps before them", full=4, tiny=2),
    ),
    run=run,
    params=lambda s: {
        "batches": s["batches"],
        "contexts": s["contexts"],
        "steps": s["decode_steps"],
        "warmup_steps": s["decode_warmup_steps"],
    },
    engine_args=lambda s: {"max_num_seqs": max(s["batches"])},
    point_schema=POINT,
    brief=brief,
    table=table,
    plot=plot,
)
