"""Summarize one run directory: ``python -m loadtest.report RUN_DIR [--warmup S]``.

Reads the per-request JSONL files the Locust users wrote (the source of every number: exact
times, usage token counts, all workers) and Locust's own CSVs (``--csv RUN_DIR/locust``: user count
over time, its failure table, its counts as a cross-check). Prints a p50/p90/p99 table and writes
``summary.json`` plus three PNGs: latency percentiles over time, throughput over time, TTFT histogram.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

from sambay_client import metrics
from sambay_client.jsonutil import json_safe

ROWS = (
    ("ttft_ms", "TTFT (ms)"),
    ("tfat_ms", "time to first answer (ms)"),
    ("itl_ms", "ITL (ms)"),
    ("tpot_ms", "TPOT (ms)"),
    ("e2e_ms", "e2e latency (ms)"),
    ("output_tps", "output tok/s per request"),
)
PLOTS = ("latency_over_time.png", "throughput_over_time.png", "ttft_hist.png")


def read_records(run_dir: Path) -> list[dict[str, Any]]:
    """All workers' lines; a line cut short by a killed process is skipped, not fatal."""
    records = []
    for path in sorted(run_dir.glob("requests-*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    return records


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _num(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "", "N/A") else None
    except ValueError:
        return None


def read_locust(run_dir: Path, prefix: str = "locust") -> dict[str, Any]:
    """Locust's view: per entry counts and (rounded-histogram) percentiles, failures, and the
    user count over time. Empty when the run had no --csv."""
    stats = {}
    for row in _read_csv(run_dir / f"{prefix}_stats.csv"):
        key = f"{row['Type']} {row['Name']}".strip() if row.get("Type") else row["Name"]
        stats[key] = {
            "requests": int(row["Request Count"]),
            "failures": int(row["Failure Count"]),
            "avg_ms": _num(row["Average Response Time"]),
            "rps": _num(row["Requests/s"]),
            **{f"p{q}_ms": _num(row.get(f"{q}%")) for q in metrics.PERCENTILES},
        }
    failures = [
        {"method": r["Method"], "name": r["Name"], "error": r["Error"], "occurrences": int(r["Occurrences"])}
        for r in _read_csv(run_dir / f"{prefix}_failures.csv")
    ]
    users, rps = [], []
    for row in _read_csv(run_dir / f"{prefix}_stats_history.csv"):
        t = _num(row["Timestamp"])
        if row["Name"] == "Aggregated":
            users.append((t, int(row["User Count"])))
        elif row["Type"] == "POST":  # per-entry rows exist with --csv-full-history
            rps.append((t, _num(row["Requests/s"]) or 0.0))
    return {"stats": stats, "failures": failures, "users": users, "post_rps": rps}


def fmt(v: float | None, width: int = 10) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-".rjust(width)
    return f"{v:{width}.1f}" if abs(v) < 1e5 else f"{v:{width}.3g}"


def table(summary: dict[str, Any], locust: dict[str, Any] | None = None) -> str:
    lines = [f"{'metric':<28}{'n':>8}{'mean':>10}{'p50':>10}{'p90':>10}{'p99':>10}"]
    for key, label in ROWS:
        d = summary.get(key) or {}
        lines.append(
            f"{label:<28}{d.get('n', 0):>8}{fmt(d.get('mean'))}"
            + "".join(fmt(d.get(f"p{q}")) for q in metrics.PERCENTILES)
        )
    by_status = ", ".join(f"{s}: {n}" for s, n in summary.get("errors_by_status", {}).items()) or "none"
    lines += [
        f"{'requests/s (ok)':<28}{fmt(summary.get('requests_per_s'), 8)}",
        f"{'output tok/s (all users)':<28}{fmt(summary.get('output_tokens_per_s'), 8)}",
        f"{'error rate':<28}{100 * summary.get('error_rate', 0):>7.2f} %  "
        f"({summary.get('failed', 0)} of {summary.get('requests', 0)}; by status: {by_status})",
        f"duration {summary.get('duration_s', 0):.1f} s, {summary.get('output_tokens', 0)} output tokens, "
        f"{summary.get('reasoning_requests', 0)} requests with reasoning before the answer"
        + (f", {summary['without_usage']} without usage (no token counts)" if summary.get("without_usage") else ""),
    ]
    for err, n in (summary.get("errors") or {}).items():
        lines.append(f"  {n:>6} x {err}")
    post = next((v for k, v in (locust or {}).get("stats", {}).items() if k.startswith("POST ")), None)
    if post:
        lines.append(
            f"Locust CSV: {post['requests']} requests, {post['failures']} failures "
            "(requests finishing during --stop-timeout may be missing there)"
        )
    return "\n".join(lines)


def plot(
    run_dir: Path, records: list[dict[str, Any]], locust: dict[str, Any], bin_s: float | None = None
) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tl = metrics.timeline(records, bin_s)
    if not tl["t"]:
        return []
    t0 = tl["t0"]
    users = [(t - t0, n) for t, n in locust.get("users", []) if t is not None]
    out = []

    def with_users(ax) -> None:
        if users:
            twin = ax.twinx()
            twin.step([u[0] for u in users], [u[1] for u in users], where="post", color="grey", alpha=0.5, lw=1)
            twin.set_ylabel("users", color="grey")

    fig, axes = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    for ax, key, label in zip(axes, ("ttft", "itl", "e2e"), ("TTFT", "ITL", "e2e latency"), strict=True):
        for q, style in zip(metrics.PERCENTILES, ("-", "--", ":"), strict=True):
            ax.plot(tl["t"], tl[f"{key}_p{q}"], style, marker=".", label=f"p{q}")
        ax.set_ylabel(f"{label} (ms)")
        ax.legend(loc="upper left", fontsize=8)
        ax.grid(alpha=0.3)
    with_users(axes[0])
    axes[-1].set_xlabel(f"seconds since the first request (bins of {tl['bin_s']:g} s)")
    fig.suptitle(f"latency percentiles over time: {run_dir.name}")
    fig.tight_layout()
    out.append(run_dir / PLOTS[0])
    fig.savefig(out[-1], dpi=100)
    plt.close(fig)

    fig, axes = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    axes[0].plot(tl["t"], tl["output_tokens_per_s"], marker=".", label="output tok/s")
    axes[0].set_ylabel("output tokens/s")
    with_users(axes[0])
    axes[1].plot(tl["t"], tl["requests_per_s"], marker=".", label="completed req/s")
    axes[1].plot(tl["t"], tl["failures_per_s"], marker="x", color="red", label="failed req/s")
    if locust.get("post_rps"):
        axes[1].plot(
            [t - t0 for t, _ in locust["post_rps"]],
            [v for _, v in locust["post_rps"]],
            lw=1,
            alpha=0.6,
            label="Locust req/s (moving)",
        )
    axes[1].set_ylabel("requests/s")
    axes[1].legend(loc="upper left", fontsize=8)
    axes[1].set_xlabel(f"seconds since the first request (bins of {tl['bin_s']:g} s)")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(f"throughput over time: {run_dir.name}")
    fig.tight_layout()
    out.append(run_dir / PLOTS[1])
    fig.savefig(out[-1], dpi=100)
    plt.close(fig)

    ok = [r for r in records if metrics.is_ok(r)]
    ttft = [r["ttft_ms"] for r in ok if r.get("ttft_ms") is not None]
    tfat = [r["tfat_ms"] for r in ok if r.get("tfat_ms") is not None]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.hist(ttft, bins=40, alpha=0.7, label=f"TTFT (n={len(ttft)})")
    if tfat and tfat != ttft:
        ax.hist(tfat, bins=40, alpha=0.5, label=f"time to first answer (n={len(tfat)})")
    ax.set_xlabel("ms")
    ax.set_ylabel("requests")
    ax.legend()
    ax.set_title(f"TTFT distribution: {run_dir.name}")
    fig.tight_layout()
    out.append(run_dir / PLOTS[2])
    fig.savefig(out[-1], dpi=100)
    plt.close(fig)
    return out


def report(run_dir: Path, warmup_s: float = 0.0, bin_s: float | None = None, plots: bool = True) -> dict[str, Any]:
    """Summarize, print, write summary.json (and the plots); returns what summary.json holds."""
    records = read_records(run_dir)
    if not records:
        raise SystemExit(f"{run_dir}: no requests-*.jsonl records (was the locustfile run with this run dir?)")
    summary = metrics.summarize(records, warmup_s)
    locust = read_locust(run_dir)
    config_path = run_dir / "loadtest_config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else None
    kept = [r for r in records if r["start"] >= min(x["start"] for x in records) + warmup_s]
    files = [str(p.name) for p in plot(run_dir, kept, locust, bin_s)] if plots else []
    print(f"run {run_dir}: {len(records)} requests from {len(list(run_dir.glob('requests-*.jsonl')))} file(s)")
    print(table(summary, locust))
    result = {
        "summary": summary,
        "locust": {k: v for k, v in locust.items() if k != "post_rps"},
        "config": config,
        "plots": files,
    }
    (run_dir / "summary.json").write_text(json.dumps(json_safe(result), indent=1))
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m loadtest.report", description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--warmup", type=float, default=0.0, help="leave out requests started in the first S seconds")
    p.add_argument("--bin", type=float, default=None, help="seconds per bin in the over-time plots")
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)
    report(args.run_dir, args.warmup, args.bin, not args.no_plots)


if __name__ == "__main__":
    sys.exit(main())
