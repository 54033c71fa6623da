"""Admission: at most max_pending engine requests at once, 429 + Retry-After beyond, slots freed."""

from __future__ import annotations

import asyncio

from asgi_stub import Stub, acall

from sambay_server import policies
from sambay_server.policies.admission import Admission


def test_over_the_limit_is_429_and_slots_come_back():
    release = asyncio.Event()

    class Slow(Stub):
        async def __call__(self, scope, receive, send):
            if scope["path"] == "/v1/completions":
                await release.wait()
            await super().__call__(scope, receive, send)

    app = Admission(Slow(), policies.settings(max_pending=2))

    async def run():
        held = [asyncio.create_task(acall(app, body=b"{}")) for _ in range(2)]
        await asyncio.sleep(0.05)
        over = await acall(app, body=b"{}")
        free = await acall(app, "GET", "/v1/models")  # not work for the engine: not counted
        tokenize = await acall(app, "POST", "/tokenize")
        deep = await acall(app, "GET", "/health", query=b"deep=1")  # generates: counted
        release.set()
        done = await asyncio.gather(*held)
        again = await acall(app, body=b"{}")
        return over, free, tokenize, deep, done, again

    over, free, tokenize, deep, done, again = asyncio.run(run())
    assert over.status == 429 and over.headers["retry-after"] == "1"
    assert over.json()["error"]["type"] == "rate_limit_error" and "--max-pending 2" in over.json()["error"]["message"]
    assert deep.status == 429
    assert free.status == tokenize.status == 200
    assert [r.status for r in done] == [200, 200] and again.status == 200 and app.in_flight == 0


def test_a_failing_request_frees_its_slot():
    class Boom(Stub):
        async def __call__(self, scope, receive, send):
            raise RuntimeError("boom")

    app = Admission(Boom(), policies.settings(max_pending=1))
    try:
        asyncio.run(acall(app, body=b"{}"))
    except RuntimeError:
        pass
    assert app.in_flight == 0
