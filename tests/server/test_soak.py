"""Soak, CI-sized: many small requests with the server's RSS sampled (no errors, memory flat), and
many dropped streams (every admission slot and engine request is freed afterwards)."""

from __future__ import annotations

import asyncio
import os
import re
import time

import httpx
import psutil
import pytest

pytestmark = pytest.mark.engine
M = "sambay-tiny"
SOAK_REQUESTS = int(os.environ.get("SAMBAY_SOAK_REQUESTS", "1000"))
DROPPED_STREAMS = int(os.environ.get("SAMBAY_DROPPED_STREAMS", "300"))


def _running(base: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    return sum(float(v) for v in re.findall(r"^vllm:num_requests_running(?:\{[^}]*\})? (\S+)$", text, re.M))


def test_soak_small_requests_no_errors_flat_memory(server, auth):
    proc = psutil.Process(server["proc"].pid)
    samples: list[int] = []
    statuses: dict[int, int] = {}

    async def run():
        sem = asyncio.Semaphore(8)
        async with httpx.AsyncClient(timeout=120, headers=auth) as c:

            async def one(i):
                async with sem:
                    if i % 2:
                        body = {"model": M, "prompt": f"soak {i}", "max_tokens": 2, "temperature": 0}
                        r = await c.post(f"{server['base']}/v1/completions", json=body)
                    else:
                        body = {"model": M, "messages": [{"role": "user", "content": f"soak {i}"}], "max_tokens": 2}
                        r = await c.post(f"{server['base']}/v1/chat/completions", json=body)
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                    if i % 100 == 0:
                        samples.append(proc.memory_info().rss)

            await asyncio.gather(*[one(i) for i in range(SOAK_REQUESTS)])

    start = time.monotonic()
    asyncio.run(run())
    mib = [s >> 20 for s in samples]
    print(f"\nsoak: {SOAK_REQUESTS} requests in {time.monotonic() - start:.0f} s, statuses {statuses}, RSS MiB {mib}")
    assert statuses == {200: SOAK_REQUESTS}
    # Flat: after warm-up (first samples) the server's RSS grows by less than 64 MiB over the run.
    assert max(mib[2:]) - mib[1] < 64, mib


def test_dropped_streams_free_their_slots(server, auth):
    async def drop(c):
        body = {"model": M, "prompt": "Keep going", "max_tokens": 200, "ignore_eos": True, "stream": True}
        async with c.stream("POST", f"{server['base']}/v1/completions", json=body) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    break  # leave after the first chunk: the connection closes

    async def run():
        sem = asyncio.Semaphore(server["max_pending"] // 2)
        async with httpx.AsyncClient(timeout=120, headers=auth, limits=httpx.Limits(max_connections=64)) as c:

            async def one(_):
                async with sem:
                    await drop(c)

            await asyncio.gather(*[one(i) for i in range(DROPPED_STREAMS)])

    start = time.monotonic()
    asyncio.run(run())
    deadline = time.monotonic() + 60
    while _running(server["base"]) != 0:
        assert time.monotonic() < deadline, "engine requests still running after their clients left"
        time.sleep(0.5)
    print(f"\n{DROPPED_STREAMS} dropped streams in {time.monotonic() - start:.0f} s; engine idle again")

    async def full_burst():  # every admission slot is free again: max_pending requests at once all pass
        async with httpx.AsyncClient(timeout=120, headers=auth, limits=httpx.Limits(max_connections=100)) as c:
            body = {"model": M, "prompt": "x", "max_tokens": 1}
            rs = await asyncio.gather(*[c.post(f"{server['base']}/v1/completions", json=body)
                                        for _ in range(server["max_pending"])])  # fmt: skip
            return [r.status_code for r in rs]

    assert asyncio.run(full_burst()) == [200] * server["max_pending"]
