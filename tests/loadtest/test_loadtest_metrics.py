"""Run-level aggregation of per-request records."""

from __future__ import annotations

import random

import numpy as np
import pytest

from sambay_client import metrics


def rec(start: float, ttft: float, itl: list[float], tokens: int | None, status: int = 200, error: str | None = None):
    e2e = ttft + sum(itl)
    return {
        "start": start,
        "status": status,
        "error": error,
        "ttft_ms": ttft,
        "tfat_ms": ttft,
        "itl_ms": itl,
        "e2e_ms": e2e,
        "total_ms": e2e + 5,
        "output_tokens": tokens,
        "prompt_tokens": 10,
        "tpot_ms": (e2e - ttft) / (tokens - 1) if tokens and tokens > 1 else None,
    }


def test_percentile_matches_numpy():
    rng = random.Random(0)
    values = sorted(rng.expovariate(1) for _ in range(257))
    for q in (0, 1, 50, 90, 99, 100):
        assert metrics.percentile(values, q) == pytest.approx(np.percentile(values, q))


def test_summary_pools_itl_counts_errors_and_rates():
    records = [
        rec(100.0, 50, [10, 10, 10], 4),
        rec(100.5, 70, [20, 30], 3),
        {"start": 101.0, "status": 429, "error": "HTTP 429 rate_limit_error", "total_ms": 2.0},
        {"start": 101.2, "status": 0, "error": "connection error: ConnectionRefusedError", "total_ms": 1.0},
    ]
    s = metrics.summarize(records)
    assert (s["requests"], s["ok"], s["failed"]) == (4, 2, 2)
    assert s["error_rate"] == 0.5
    assert s["errors_by_status"] == {"0": 1, "429": 1}
    assert s["itl_ms"]["n"] == 5 and s["itl_ms"]["p50"] == 10  # every gap, not per-request means
    assert s["ttft_ms"]["mean"] == 60
    duration = 101.2 + 1.0 / 1e3 - 100.0  # first start to last end, failed requests included
    assert s["duration_s"] == pytest.approx(duration)
    assert s["output_tokens_per_s"] == pytest.approx(7 / duration)
    assert s["requests_per_s"] == pytest.approx(2 / duration)
    assert s["output_tps"]["n"] == 2


def test_warmup_leaves_out_early_requests():
    records = [rec(100.0, 900, [1], 2), rec(103.0, 50, [1], 2)]
    assert metrics.summarize(records, warmup_s=2)["ttft_ms"]["max"] == 50


def test_timeline_spreads_usage_tokens_over_chunks():
    # 3 chunks at 0.5 s, 1.5 s and 2.5 s after the start; usage says 9 tokens: 3 per chunk.
    records = [rec(0.0, 500, [1000, 1000], 9)]
    tl = metrics.timeline(records, bin_s=1.0)
    widths = [1.0] * (len(tl["t"]) - 1) + [metrics.end_time(records[0]) - (len(tl["t"]) - 1)]
    assert sum(v * w for v, w in zip(tl["output_tokens_per_s"], widths, strict=True)) == pytest.approx(9)
    assert tl["output_tokens_per_s"][:2] == [3.0, 3.0]
    assert tl["ttft_p50"][0] == 500
