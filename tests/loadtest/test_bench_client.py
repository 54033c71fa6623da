"""sambay-bench's closed-loop client (aiohttp) against the scripted server of conftest.py, whose
stream timings are known: the same numbers as the Locust client, and the paper's aggregates."""

from __future__ import annotations

import asyncio
import time

import pytest

from sambay_bench.closed_loop import closed_loop, level_point
from sambay_client.workload import COMPLETIONS, BenchmarkTokenPrompts, RequestFactory, Workload

LOAD = Workload(prompt_tokens=8, output_tokens=4, ignore_eos=True, temperature=1.0, top_p=0.9)


def factory(model: str) -> RequestFactory:
    return RequestFactory(LOAD, model, COMPLETIONS, BenchmarkTokenPrompts(100), max_model_len=64)


def run(
    base: str, key: str | None, model: str, concurrency: int, requests: int, deadline_s: float = 60, warmup: int = 0
) -> dict:
    return asyncio.run(
        closed_loop(
            base,
            factory(model),
            concurrency,
            requests,
            warmup,
            deadline=time.perf_counter() + deadline_s,
            api_key=key,
        )
    )


def test_closed_loop_times_each_request_and_aggregates_like_the_paper(scripted_server, scripted_key):
    out = run(scripted_server, scripted_key, "scripted", concurrency=2, requests=4, warmup=1)
    recs = out["records"]
    assert len(recs) == 4 and out["cut_in_flight"] == 0 and {r["client"] for r in recs} == {0, 1}
    for r in recs:
        assert r["status"] == 200 and r["error"] is None, r
        assert 197 <= r["ttft_ms"] <= 260, r  # first reasoning delta of the script
        assert 597 <= r["e2e_ms"] <= 680 and r["total_ms"] >= 797, r
        assert r["output_tokens"] == 9 and len(r["itl_ms"]) == 5  # usage, not the 6 chunks
    p = level_point("sambay", 2, recs, planned=4, cut_in_flight=0)
    assert (p["ok"], p["failed"], p["requests"]) == (4, 0, 4)
    assert p["mean_latency_s"] == pytest.approx(sum(r["total_ms"] for r in recs) / 4 / 1e3)
    assert p["queries_per_s"] == pytest.approx(2 / p["mean_latency_s"])
    assert p["ttft_ms"]["n"] == 4 and p["itl_ms"]["n"] == 20
    # 2 clients x 2 sequential requests of ~0.8 s: at least 1.6 s of wall time for 36 tokens
    assert 9 * 4 / 2.6 < p["output_tok_s"] < 9 * 4 / 1.59


def test_errors_are_counted_by_status_and_do_not_stop_the_loop(scripted_server, scripted_key):
    recs = run(scripted_server, scripted_key, "scripted-mix", concurrency=1, requests=5)["records"]
    assert [r["status"] for r in recs] == [200, 200, 429, 200, 500]
    p = level_point("dense", 1, recs, planned=5, cut_in_flight=0)
    assert (p["ok"], p["failed"]) == (3, 2)
    assert p["errors"] == {"HTTP 429 rate_limit_error": 1, "HTTP 500 server_error": 1}
    bad_key = run(scripted_server, "wrong", "scripted", concurrency=1, requests=1)["records"]
    assert bad_key[0]["status"] == 401 and bad_key[0]["error"].startswith("HTTP 401")


def test_the_deadline_cuts_requests_in_flight(scripted_server, scripted_key):
    t0 = time.perf_counter()
    out = run(scripted_server, scripted_key, "scripted", concurrency=3, requests=100, deadline_s=1.0)
    assert time.perf_counter() - t0 < 2.0  # not 100 requests of 0.8 s
    assert out["cut_in_flight"] == 3 and len(out["records"]) == 3  # one finished per client, the next cut
    refused = asyncio.run(closed_loop("http://127.0.0.1:9", factory("m"), 1, 1, 0, time.perf_counter() + 10))
    assert refused["records"][0]["status"] == 0 and "connection error" in refused["records"][0]["error"]
