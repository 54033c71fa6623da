"""Run-level numbers from per-request records (the JSONL lines the Locust users write).

Pure functions over plain dicts, so the report, the sweep and the tests share one definition.
ITL percentiles pool every gap of every request (as vLLM's benchmark does), not per-request means.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

LATENCIES = ("ttft_ms", "tfat_ms", "itl_ms", "tpot_ms", "e2e_ms", "output_tps")
PERCENTILES = (50, 90, 99)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), on already sorted values."""
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def distribution(values: Iterable[float | None]) -> dict[str, float]:
    vals = sorted(v for v in values if v is not None)
    out: dict[str, float] = {"n": len(vals)}
    if not vals:
        return out
    out["mean"] = sum(vals) / len(vals)
    out["min"], out["max"] = vals[0], vals[-1]
    for q in PERCENTILES:
        out[f"p{q}"] = percentile(vals, q)
    return out


def end_time(rec: dict[str, Any]) -> float:
    return rec["start"] + rec["total_ms"] / 1e3


def output_tps(rec: dict[str, Any]) -> float | None:
    """What one user sees: output tokens over the request's end-to-end time."""
    if rec.get("output_tokens") and rec.get("e2e_ms"):
        return rec["output_tokens"] / (rec["e2e_ms"] / 1e3)
    return None


def is_ok(rec: dict[str, Any]) -> bool:
    return rec.get("status") == 200 and not rec.get("error")


def summarize(records: list[dict[str, Any]], warmup_s: float = 0.0) -> dict[str, Any]:
    """Distributions, throughput and errors of one run. Requests that started in the first
    ``warmup_s`` seconds are left out (the ramp-up would flatter latency and hurt throughput)."""
    if not records:
        return {"requests": 0, "ok": 0, "failed": 0}
    t0 = min(r["start"] for r in records)
    recs = [r for r in records if r["start"] >= t0 + warmup_s]
    if not recs:
        return {"requests": 0, "ok": 0, "failed": 0, "warmup_s": warmup_s}
    ok = [r for r in recs if is_ok(r)]
    start = min(r["start"] for r in recs)
    duration = max(end_time(r) for r in recs) - start
    out_tokens = sum(r.get("output_tokens") or 0 for r in ok)
    prompt_tokens = sum(r.get("prompt_tokens") or 0 for r in ok)
    summary: dict[str, Any] = {
        "requests": len(recs),
        "ok": len(ok),
        "failed": len(recs) - len(ok),
        "error_rate": (len(recs) - len(ok)) / len(recs),
        "errors_by_status": dict(sorted(Counter(str(r["status"]) for r in recs if not is_ok(r)).items())),
        "errors": dict(Counter(r["error"] for r in recs if not is_ok(r)).most_common()),
        "duration_s": duration,
        "warmup_s": warmup_s,
        "requests_per_s": len(ok) / duration if duration > 0 else math.nan,
        "output_tokens_per_s": out_tokens / duration if duration > 0 else math.nan,
        "prompt_tokens_per_s": prompt_tokens / duration if duration > 0 else math.nan,
        "output_tokens": out_tokens,
        "prompt_tokens": prompt_tokens,
        "without_usage": sum(1 for r in ok if r.get("output_tokens") is None),
        "reasoning_requests": sum(
            1
            for r in ok
            if r.get("tfat_ms") is not None and r.get("ttft_ms") is not None and r["tfat_ms"] > r["ttft_ms"]
        ),
    }
    for key in LATENCIES:
        if key == "itl_ms":
            summary[key] = distribution(g for r in ok for g in r.get("itl_ms") or ())
        elif key == "output_tps":
            summary[key] = distribution(output_tps(r) for r in ok)
        else:
            summary[key] = distribution(r.get(key) for r in ok)
    return summary


def chunk_times(rec: dict[str, Any]) -> list[float]:
    """Wall-clock times of a request's output chunks, rebuilt from its TTFT and ITL list."""
    if rec.get("ttft_ms") is None:
        return []
    t = rec["start"] + rec["ttft_ms"] / 1e3
    times = [t]
    for gap in rec.get("itl_ms") or ():
        t += gap / 1e3
        times.append(t)
    return times


def timeline(records: list[dict[str, Any]], bin_s: float | None = None) -> dict[str, Any]:
    """Per time bin (seconds since the first request): output tok/s (tokens spread over the chunks
    that carried them), completed and failed requests/s, and latency percentiles of the events that
    landed in the bin (TTFT by first-token time, e2e by end time, ITL by gap end)."""
    if not records:
        return {"t": []}
    t0 = min(r["start"] for r in records)
    span = max(end_time(r) for r in records) - t0
    if bin_s is None:
        bin_s = max(1.0, math.ceil(span / 40))
    n = max(1, round(span / bin_s))  # the last bin takes the remainder: 0.5 to 1.5 bins wide
    tokens = [0.0] * n
    done, failed = [0] * n, [0] * n
    ttft: list[list[float]] = [[] for _ in range(n)]
    e2e: list[list[float]] = [[] for _ in range(n)]
    itl: list[list[float]] = [[] for _ in range(n)]

    def idx(t: float) -> int:
        return min(n - 1, max(0, int((t - t0) / bin_s)))

    for r in records:
        if not is_ok(r):
            failed[idx(end_time(r))] += 1
            continue
        done[idx(end_time(r))] += 1
        times = chunk_times(r)
        if times:
            ttft[idx(times[0])].append(r["ttft_ms"])
            per_chunk = (r.get("output_tokens") or len(times)) / len(times)
            for t in times:
                tokens[idx(t)] += per_chunk
            for t, gap in zip(times[1:], r.get("itl_ms") or (), strict=False):
                itl[idx(t)].append(gap)
        if r.get("e2e_ms") is not None:
            e2e[idx(r["start"] + r["e2e_ms"] / 1e3)].append(r["e2e_ms"])

    def pct(groups: list[list[float]], q: float) -> list[float]:
        return [percentile(sorted(g), q) for g in groups]

    width = [bin_s] * (n - 1) + [max(span - (n - 1) * bin_s, 1e-3)]
    return {
        "bin_s": bin_s,
        "t": [i * bin_s + w / 2 for i, w in enumerate(width)],
        "t0": t0,
        "output_tokens_per_s": [x / w for x, w in zip(tokens, width, strict=True)],
        "requests_per_s": [x / w for x, w in zip(done, width, strict=True)],
        "failures_per_s": [x / w for x, w in zip(failed, width, strict=True)],
        **{f"ttft_p{q}": pct(ttft, q) for q in PERCENTILES},
        **{f"itl_p{q}": pct(itl, q) for q in PERCENTILES},
        **{f"e2e_p{q}": pct(e2e, q) for q in PERCENTILES},
    }
