"""The paper's closed-loop streaming clients against an OpenAI-compatible server.

C clients each send one request, wait for its last byte and send the next, until the level's
request count is done (the paper: one unmeasured warm-up request per client, then 4C + 32
requests). What each request asks for comes from a ``sambay_client.workload.RequestFactory``, the
same that the Locust users send. Latency is a request's start to its last byte; throughput in
queries/s is C / mean latency.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable
from typing import Any

from sambay_client.jsonutil import json_safe
from sambay_client.metrics import summarize
from sambay_client.sse import RequestResult, StreamReader, http_error
from sambay_client.workload import RequestFactory


async def stream_request(session, url: str, body: dict[str, Any], headers: dict[str, str]) -> RequestResult:
    """POST one streaming request and time every SSE line as it arrives."""
    import aiohttp

    start = time.perf_counter()
    try:
        async with session.post(url, json=body, headers=headers) as resp:
            if resp.status != 200:
                return http_error(resp.status, await resp.read(), time.perf_counter() - start)
            reader = StreamReader(start)
            try:
                async for line in resp.content:
                    reader.feed(line, time.perf_counter())
            except (TimeoutError, aiohttp.ClientError) as exc:
                reader.fail(f"connection error: {type(exc).__name__}", str(exc)[:500])
            return reader.finish(time.perf_counter())
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        return RequestResult(
            status=0,
            error=f"connection error: {type(exc).__name__}",
            detail=str(exc)[:500],
            total_ms=(time.perf_counter() - start) * 1e3,
        )


async def closed_loop(
    base_url: str,
    factory: RequestFactory,
    concurrency: int,
    requests: int,
    warmup_per_client: int,
    deadline: float,
    seed: int = 0,
    api_key: str | None = None,
    on_done: Callable[[dict], None] | None = None,
) -> dict[str, Any]:
    """Run one concurrency level; returns the measured records and what was cut by the deadline.
    Requests go to ``base_url`` + the factory's endpoint style's path."""
    import aiohttp

    url = base_url + factory.style.path
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    records: list[dict[str, Any]] = []
    issued = 0
    timeout = aiohttp.ClientTimeout(total=None, sock_read=600)
    connector = aiohttp.TCPConnector(limit=concurrency + 1)

    async def client(idx: int, session) -> None:
        nonlocal issued
        rng = random.Random(seed * 1_000_003 + idx)
        for _ in range(warmup_per_client):
            await stream_request(session, url, factory.body(rng), headers)
        while issued < requests and time.perf_counter() < deadline:
            issued += 1
            req = factory.draw(rng)
            t_wall = time.time()
            result = await stream_request(session, url, req.body, headers)
            rec = {
                "start": t_wall,
                "client": idx,
                "planned_prompt_len": req.prompt_tokens,
                "planned_output_len": req.body["max_tokens"],
                **result.to_dict(),
            }
            records.append(rec)
            if on_done:
                on_done(rec)

    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        tasks = [asyncio.create_task(client(i, session)) for i in range(concurrency)]
        left = deadline - time.perf_counter()
        done, pending = await asyncio.wait(tasks, timeout=max(left, 0.0))
        for t in pending:  # in flight at the deadline: closing the connection aborts it in vLLM
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for t in done:
            t.result()  # a bug in the client must not pass for a quiet level
    return {"records": records, "cut_in_flight": len(pending), "issued": issued}


def level_point(
    model: str, concurrency: int, records: list[dict[str, Any]], planned: int, cut_in_flight: int
) -> dict[str, Any]:
    """The paper's numbers for one level, plus the distributions behind them."""
    s = summarize(records)
    ok = [r for r in records if r.get("status") == 200 and not r.get("error")]
    mean_latency = sum(r["total_ms"] for r in ok) / len(ok) / 1e3 if ok else math.nan
    return json_safe(
        {
            "model": model,
            "concurrency": concurrency,
            "requests_planned": planned,
            "requests": s["requests"],
            "ok": s["ok"],
            "failed": s["failed"],
            "errors": s.get("errors", {}),
            "cut_in_flight": cut_in_flight,
            "mean_latency_s": mean_latency,
            "queries_per_s": concurrency / mean_latency if ok else math.nan,
            "output_tok_s": s.get("output_tokens_per_s"),
            "duration_s": s.get("duration_s"),
            "prompt_tokens_mean": s["prompt_tokens"] / len(ok) if ok else None,
            "output_tokens_mean": s["output_tokens"] / len(ok) if ok else None,
            **{k: s.get(k) for k in ("ttft_ms", "itl_ms", "tpot_ms", "e2e_ms")},
        }
    )


def ratios(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """SambaY over dense at each concurrency both models ran (latency: dense over SambaY)."""
    by = {(p["model"], p["concurrency"]): p for p in points}
    out = []
    for c in sorted({p["concurrency"] for p in points}):
        s, d = by.get(("sambay", c)), by.get(("dense", c))
        if not s or not d:
            continue

        def r(a, b):
            return a / b if a and b and math.isfinite(a) and math.isfinite(b) else None

        out.append(
            {
                "concurrency": c,
                "queries_per_s": r(s["queries_per_s"], d["queries_per_s"]),
                "output_tok_s": r(s["output_tok_s"], d["output_tok_s"]),
                "latency_dense_over_sambay": r(d["mean_latency_s"], s["mean_latency_s"]),
            }
        )
    return out
