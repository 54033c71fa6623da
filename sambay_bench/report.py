"""Tables (markdown, for the terminal, ``summary.md`` and the README) and PNG plots from a
``bench.json``. Pure functions of the document, so ``sambay-bench report`` redraws a finished run."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .serve import ratios

LABEL = {"sambay": "SambaY", "dense": "Phi-4-mini (dense)"}
COLOR = {"sambay": "tab:blue", "dense": "tab:orange"}


def num(v: Any, fmt: str = ".2f") -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)


def ratio(a: Any, b: Any) -> float | None:
    return a / b if a and b else None


def times(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}x"


def _table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def points(doc: dict[str, Any], mode: str) -> list[dict[str, Any]]:
    return doc.get("modes", {}).get(mode, {}).get("points", [])


def serve_table(doc: dict[str, Any]) -> str:
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
    return _table(head, rows) + "\n\n" + note


def decode_table(doc: dict[str, Any]) -> str:
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
    return _table(head, rows)


def pair_table(doc: dict[str, Any], mode: str, key: str, value: str, head: list[str], fmt: str) -> str:
    pts = points(doc, mode)
    by = {(p["model"], p[key]): p for p in pts}
    rows = []
    for k in sorted({p[key] for p in pts}):
        s, d = by.get(("sambay", k), {}).get(value), by.get(("dense", k), {}).get(value)
        rows.append([str(k), num(s, fmt), num(d, fmt), times(ratio(d, s))])
    return _table(head, rows)


def render(doc: dict[str, Any], out: Path, plots: bool = True) -> str:
    """All tables as markdown; writes ``summary.md`` and (unless ``plots`` is off) the PNGs."""
    env = doc.get("environment") or {}
    parts = [
        f"# sambay-bench: {env.get('gpu') or env.get('device', '?')}, vLLM {env.get('vllm', '?')}, "
        f"torch {env.get('torch', '?')}",
        "`" + " ".join(doc.get("command", [])) + "`",
    ]
    modes = doc.get("modes", {})
    if "serve" in modes:
        parts += ["## Closed-loop clients (paper method)", serve_table(doc)]
    if "decode" in modes:
        parts += ["## Decode sweep (offline engine)", decode_table(doc)]
    if "genlen" in modes:
        parts += [
            "## Latency vs generation length (C = 1)",
            pair_table(
                doc, "genlen", "gen_len", "latency_s", ["generated", "SambaY s", "dense s", "dense / SambaY"], ".2f"
            ),
        ]
    if "ttft" in modes:
        parts += [
            "## TTFT (C = 1)",
            pair_table(
                doc, "ttft", "prompt_len", "ttft_ms", ["prompt", "SambaY ms", "dense ms", "dense / SambaY"], ".1f"
            ),
        ]
    skipped = [(m, s) for m, v in modes.items() for s in v.get("skipped", [])]
    if skipped:
        parts += [
            "## Skipped",
            "\n".join(
                f"- {m}: " + ", ".join(f"{k}={v}" for k, v in s.items() if k != "reason") + f": {s['reason']}"
                for m, s in skipped
            ),
        ]
    errors = [(m, e) for m, info in doc.get("models", {}).items() for e in info.get("errors", [])]
    if errors:
        parts += ["## Errors", "\n".join(f"- {m}: {e}" for m, e in errors)]
    if plots:
        written = plot_all(doc, out)
        parts += ["Plots: " + ", ".join(p.name for p in written)]
    text = "\n\n".join(parts) + "\n"
    (out / "summary.md").write_text(text)
    return text


def plot_all(doc: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    title = f"{(doc.get('environment') or {}).get('gpu') or 'CPU'}, vLLM {(doc.get('environment') or {}).get('vllm')}"

    def models_of(pts):
        return [m for m in LABEL if any(p["model"] == m for p in pts)]

    pts = points(doc, "serve")
    if pts:
        fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
        for m in models_of(pts):
            mp = sorted((p for p in pts if p["model"] == m), key=lambda p: p["concurrency"])
            a.plot(
                [p["queries_per_s"] for p in mp],
                [p["mean_latency_s"] for p in mp],
                "o-",
                color=COLOR[m],
                label=LABEL[m],
            )
            for p in mp:
                a.annotate(
                    f"C={p['concurrency']}",
                    (p["queries_per_s"], p["mean_latency_s"]),
                    fontsize=7,
                    textcoords="offset points",
                    xytext=(3, 3),
                )
            b.plot(
                [p["concurrency"] for p in mp], [p["output_tok_s"] for p in mp], "o-", color=COLOR[m], label=LABEL[m]
            )
        a.set(xlabel="throughput (queries/s)", ylabel="mean latency (s)", title="throughput vs latency")
        b.set(xlabel="concurrent clients", ylabel="output tok/s", xscale="log", title="output throughput")
        _integer_ticks(b.xaxis, sorted({p["concurrency"] for p in pts}))
        for ax in (a, b):
            ax.grid(alpha=0.3)
            ax.legend()
        fig.suptitle(f"closed-loop clients, {title}")
        written.append(_save(fig, out / "serve.png"))

    pts = points(doc, "decode")
    if pts:
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
            _integer_ticks(ax.xaxis, sorted({p["batch_running"] for p in pts if p["context"] == ctx}))
            _plain_log_labels(ax.yaxis)
            ax.grid(alpha=0.3, which="both")
        axes[0][0].set_ylabel("ms per decode step")
        axes[0][0].legend(fontsize=7)
        fig.suptitle(f"decode step time, {title}")
        written.append(_save(fig, out / "decode.png"))

    for mode, key, value, xlabel, ylabel, name in (
        ("genlen", "gen_len", "latency_s", "generated tokens", "latency (s)", "genlen.png"),
        ("ttft", "prompt_len", "ttft_ms", "prompt tokens", "TTFT (ms)", "ttft.png"),
    ):
        pts = points(doc, mode)
        if not pts:
            continue
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for m in models_of(pts):
            mp = sorted((p for p in pts if p["model"] == m), key=lambda p: p[key])
            ax.plot([p[key] for p in mp], [p[value] for p in mp], "o-", color=COLOR[m], label=LABEL[m])
        ax.set(xlabel=xlabel, ylabel=ylabel, title=f"{ylabel.split(' ')[0]} at C = 1, {title}")
        ax.grid(alpha=0.3)
        ax.legend()
        written.append(_save(fig, out / name))
    return written


def _integer_ticks(axis, values: list[int]) -> None:
    from matplotlib.ticker import FixedLocator, NullLocator

    axis.set_major_locator(FixedLocator(values))
    axis.set_minor_locator(NullLocator())
    axis.set_ticklabels([str(v) for v in values])


def _plain_log_labels(axis) -> None:
    from matplotlib.ticker import LogFormatter

    axis.set_major_formatter(LogFormatter(labelOnlyBase=False))
    axis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
