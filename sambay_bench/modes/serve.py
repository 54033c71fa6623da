"""The paper's method: closed-loop streaming clients through each model's OpenAI server.

Per concurrency level C: one unmeasured warm-up request per client, then 4C + 32 measured requests
(or what ``--requests`` / ``--requests-per-client`` ask for); mean latency, queries/s = C / mean
latency, TTFT, ITL, TPOT, output tok/s, and SambaY over dense. The requests are the one workload
definition's: the paper's preset with the lengths this run asked for, to ``/v1/completions`` with
the benchmark tokenizer's words, so prompts are exactly as long as drawn. Whatever differs from
the paper's method is listed in ``paper_method.differences``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

from sambay_client.workload import (
    COMPLETIONS,
    PAPER,
    PAPER_CONCURRENCY,
    PAPER_REQUESTS_RULE,
    PAPER_WARMUP_PER_CLIENT,
    BenchmarkTokenPrompts,
    RequestFactory,
    Workload,
    paper_requests,
)

from ..closed_loop import closed_loop, level_point, ratios
from ..mode import SERVER, Mode, Option, ServerRun, int_list
from ..tables import markdown_table, num, points, times

OPTIONS = (
    Option("concurrency", int_list, "client counts C", full=list(PAPER_CONCURRENCY), tiny=[1, 2, 4]),
    Option("prompt_len", int, "mean prompt tokens", full=PAPER.prompt_tokens, tiny=48),
    Option("output_len", int, "mean generated tokens (ignore_eos)", full=PAPER.output_tokens, tiny=16),
    Option(
        "jitter",
        float,
        "std of both lengths as a fraction of the mean",
        full=PAPER.prompt_jitter,
        tiny=0.3,
    ),
    Option("requests", int, f"measured requests per level (paper: {PAPER_REQUESTS_RULE})"),
    Option("requests_per_client", int, "measured requests per level = this x C"),
    Option("warmup_per_client", int, "unmeasured requests per client first", full=PAPER_WARMUP_PER_CLIENT, tiny=1),
)
_FULL = {o.name: o.full for o in OPTIONS}
# The paper's method in this mode's settings: what a run is compared against.
PAPER_METHOD = {
    "size": "full",
    **{k: _FULL[k] for k in ("concurrency", "prompt_len", "output_len", "jitter")},
    "requests": PAPER_REQUESTS_RULE,
    "warmup_per_client": _FULL["warmup_per_client"],
}


def workload(s: dict[str, Any]) -> Workload:
    """The paper's request shape with this run's lengths."""
    return dataclasses.replace(
        PAPER,
        prompt_tokens=s["prompt_len"],
        output_tokens=s["output_len"],
        prompt_jitter=s["jitter"],
        output_jitter=s["jitter"],
    )


def request_factory(s: dict[str, Any], model: str, vocab_size: int) -> RequestFactory:
    """What the clients send to ``model``'s server (served under the name ``model``)."""
    return RequestFactory(
        workload(s),
        model,
        style=COMPLETIONS,  # no chat template: the prompt is exactly the drawn tokens
        prompts=BenchmarkTokenPrompts(vocab_size),
        max_model_len=s["max_model_len"],
    )


def planned_requests(s: dict[str, Any], concurrency: int) -> int:
    if s["requests"]:
        return s["requests"]
    if s["requests_per_client"]:
        return s["requests_per_client"] * concurrency
    return paper_requests(concurrency)


def paper_differences(s: dict[str, Any]) -> dict[str, Any]:
    per_client = f"{s['requests_per_client']}C" if s.get("requests_per_client") else None
    ran = {**{k: s[k] for k in PAPER_METHOD if k in s}, "requests": s["requests"] or per_client or PAPER_REQUESTS_RULE}
    return {k: {"paper": v, "ran": ran[k]} for k, v in PAPER_METHOD.items() if ran[k] != v}


def check(s: dict[str, Any]) -> None:
    if s["requests"] is not None and s["requests_per_client"] is not None:
        raise SystemExit("sambay-bench: give --requests or --requests-per-client, not both")
    for key in ("requests", "requests_per_client"):
        if s[key] is not None and s[key] < 1:
            raise SystemExit(f"sambay-bench: --{key.replace('_', '-')} must be at least 1")
    if s["jitter"] < 0 or s["jitter"] >= 1:
        raise SystemExit("sambay-bench: --jitter must be in [0, 1)")
    if s["prompt_len"] + 1 > s["max_model_len"]:
        raise SystemExit(
            f"sambay-bench: --prompt-len {s['prompt_len']} does not fit --max-model-len {s['max_model_len']}"
        )


def run(ctx: ServerRun) -> None:
    from tqdm import tqdm

    s, model = ctx.settings, ctx.model
    section = ctx.results.mode("serve")
    section.setdefault("paper_method", {"differences": paper_differences(s)})
    factory = request_factory(s, model, ctx.vocab_size)
    budget = s["time_budget_s"] if s["time_budget_s"] is not None else math.inf
    end = time.perf_counter() + budget
    levels = list(s["concurrency"])
    for i, c in enumerate(levels):
        planned = planned_requests(s, c)
        level_deadline = time.perf_counter() + (end - time.perf_counter()) / (len(levels) - i)
        bar = tqdm(total=planned, desc=f"{model} serve C={c}", unit="req", leave=False, disable=None)
        level = asyncio.run(
            closed_loop(
                ctx.base_url,
                factory,
                c,
                planned,
                s["warmup_per_client"],
                level_deadline,
                seed=c,
                on_done=lambda _r, b=bar: b.update(),
            )
        )
        bar.close()
        with open(ctx.out / "logs" / f"serve-{model}-c{c}.jsonl", "w") as f:
            for rec in level["records"]:
                f.write(json.dumps(rec) + "\n")
        point = level_point(model, c, level["records"], planned, level["cut_in_flight"])
        if not point["ok"]:
            reason = (
                "time budget ran out before a request completed"
                if not point["failed"]
                else f"every request failed: {point['errors']}"
            )
            ctx.results.add_skip("serve", {"model": model, "concurrency": c, "reason": reason})
            ctx.log.say(f"[{model}] serve: C={c} skipped: {reason}")
            continue
        if point["requests"] < planned:
            section["paper_method"].setdefault("cut_by_budget", []).append(
                {
                    "model": model,
                    "concurrency": c,
                    "planned": planned,
                    "measured": point["requests"],
                    "cut_in_flight": point["cut_in_flight"],
                }
            )
        ctx.results.add_point("serve", point)
        ctx.log.say(f"[{model}] serve: {brief(point)}")


def brief(p: dict[str, Any]) -> str:
    ttft = (p.get("ttft_ms") or {}).get("mean")
    return (
        f"C={p['concurrency']}: {p['ok']}/{p['requests_planned']} ok, latency {p['mean_latency_s']:.2f} s, "
        f"{p['queries_per_s']:.3f} q/s, {p['output_tok_s']:.0f} tok/s, TTFT {ttft or float('nan'):.0f} ms"
    )


def table(doc: dict[str, Any]) -> str:
    pts = points(doc, "serve")
    by = {(p["model"], p["concurrency"]): p for p in pts}
    rat = {r["concurrency"]: r for r in ratios(pts)}
    rows = []
    for c in sorted({p["concurrency"] for p in pts}):
        s, d = by.get(("sambay", c), {}), by.get(("dense", c), {})
        rows.append(
            [
                str(c),
                num(s.get("mean_latency_s")),
                num(d.get("mean_latency_s")),
                num(s.get("queries_per_s"), ".4f"),
                num(d.get("queries_per_s"), ".4f"),
                times(rat.get(c, {}).get("queries_per_s")),
                num(s.get("output_tok_s"), ".0f"),
                num(d.get("output_tok_s"), ".0f"),
                num((s.get("ttft_ms") or {}).get("mean"), ".0f"),
                num((d.get("ttft_ms") or {}).get("mean"), ".0f"),
                f"{s.get('ok', 0)}/{d.get('ok', 0)}",
            ]
        )
    head = [
        "C",
        "latency s SambaY",
        "latency s dense",
        "q/s SambaY",
        "q/s dense",
        "q/s ratio",
        "tok/s SambaY",
        "tok/s dense",
        "TTFT ms SambaY",
        "TTFT ms dense",
        "ok S/D",
    ]
    method = doc["modes"]["serve"].get("paper_method", {})
    diffs = method.get("differences", {})
    note = (
        "Paper method as published."
        if not diffs
        else "Reduced against the paper: " + "; ".join(f"{k} {v['ran']} (paper {v['paper']})" for k, v in diffs.items())
    )
    for cut in method.get("cut_by_budget", []):
        note += (
            f"\nTime budget: {cut['model']} C={cut['concurrency']} measured {cut['measured']} of "
            f"{cut['planned']} requests."
        )
    return markdown_table(head, rows) + "\n\n" + note


def plot(doc: dict[str, Any], path: Path, title: str) -> Path | None:
    from ..plots import COLOR, LABEL, integer_ticks, models_of, pyplot, save

    pts = points(doc, "serve")
    if not pts:
        return None
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    for m in models_of(pts):
        mp = sorted((p for p in pts if p["model"] == m), key=lambda p: p["concurrency"])
        a.plot(
            [p["queries_per_s"] for p in mp], [p["mean_latency_s"] for p in mp], "o-", color=COLOR[m], label=LABEL[m]
        )
        for p in mp:
            a.annotate(
                f"C={p['concurrency']}",
                (p["queries_per_s"], p["mean_latency_s"]),
                fontsize=7,
                textcoords="offset points",
                xytext=(3, 3),
            )
        b.plot([p["concurrency"] for p in mp], [p["output_tok_s"] for p in mp], "o-", color=COLOR[m], label=LABEL[m])
    a.set(xlabel="throughput (queries/s)", ylabel="mean latency (s)", title="throughput vs latency")
    b.set(xlabel="concurrent clients", ylabel="output tok/s", xscale="log", title="output throughput")
    integer_ticks(b.xaxis, sorted({p["concurrency"] for p in pts}))
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"closed-loop clients, {title}")
    return save(fig, path)


POINT = {
    "type": "object",
    "required": [
        "model",
        "concurrency",
        "requests_planned",
        "requests",
        "ok",
        "failed",
        "errors",
        "mean_latency_s",
        "queries_per_s",
        "output_tok_s",
        "ttft_ms",
        "itl_ms",
    ],
    "properties": {
        "model": {"$ref": "#/$defs/model"},
        "concurrency": {"type": "integer", "minimum": 1},
        "requests_planned": {"type": "integer", "minimum": 1},
        "ok": {"type": "integer", "minimum": 0},
        "mean_latency_s": {"type": ["number", "null"]},
        "queries_per_s": {"type": ["number", "null"]},
        "output_tok_s": {"type": ["number", "null"]},
        "ttft_ms": {"$ref": "#/$defs/distribution"},
        "itl_ms": {"$ref": "#/$defs/distribution"},
    },
}
PAPER_METHOD_SCHEMA = {
    "type": "object",
    "required": ["differences"],
    "properties": {
        "differences": {"type": "object", "additionalProperties": {"type": "object", "required": ["paper", "ran"]}},
        "cut_by_budget": {
            "type": "array",
            "items": {"type": "object", "required": ["model", "concurrency", "planned", "measured"]},
        },
    },
}

MODE = Mode(
    name="serve",
    title="Closed-loop clients (paper method)",
    runs_in=SERVER,
    options=OPTIONS,
    run=run,
    check=check,
    point_schema=POINT,
    section_properties={"paper_method": PAPER_METHOD_SCHEMA},
    brief=brief,
    table=table,
    plot=plot,
)
