"""AccessLog and RouteMetrics: one line and one count per request, labelled by route template."""

from __future__ import annotations

import asyncio
import json
import logging

from asgi_stub import Stub, acall, call, http_scope
from starlette.routing import Route

from sambay_server import policies
from sambay_server.policies.access_log import AccessLog
from sambay_server.policies.route_metrics import RouteMetrics, requests_counter

ROUTES = [Route("/v1/models/{name}", lambda request: None, methods=["GET"])]


def count(route, status) -> float:
    return requests_counter().labels(route, str(status))._value.get()


def test_counted_by_template_and_random_paths_share_one_label():
    stub = Stub(routes=ROUTES)
    app = RouteMetrics(stub, policies.settings())
    before, unmatched = count("/v1/models/{name}", 200), count("unmatched", 200)
    call(app, "GET", "/v1/models/a", stub=stub)
    call(app, "GET", "/v1/models/b", stub=stub)
    for i in range(5):
        call(app, "GET", f"/probe-{i}", stub=stub)
    assert count("/v1/models/{name}", 200) == before + 2 and count("unmatched", 200) == unmatched + 5


def test_a_client_that_leaves_before_an_answer_counts_as_499(caplog):
    class Gone(Stub):
        async def __call__(self, scope, receive, send):
            raise asyncio.CancelledError

    stub = Gone()
    app = AccessLog(RouteMetrics(stub, policies.settings()), policies.settings())
    before = count("unmatched", 499)
    caplog.set_level(logging.INFO, logger="sambay_server.access")
    try:
        asyncio.run(acall(app, "POST", "/gone", stub=stub))
    except asyncio.CancelledError:
        pass
    assert count("unmatched", 499) == before + 1
    assert json.loads(caplog.records[-1].message)["status"] == 499


def test_one_json_line_per_request(caplog):
    stub = Stub(routes=ROUTES)
    app = policies.compose(stub, policies.settings())
    caplog.set_level(logging.INFO, logger="sambay_server.access")
    r = call(app, "GET", "/v1/models/x", headers={"X-Request-Id": "rid-1"}, stub=stub)
    lines = [json.loads(rec.message) for rec in caplog.records if rec.name == "sambay_server.access"]
    assert len(lines) == 1
    line = lines[0]
    assert line["request_id"] == "rid-1" and line["route"] == "/v1/models/{name}" and line["path"] == "/v1/models/x"
    assert line["status"] == r.status == 200 and line["bytes"] == len(r.body) and line["latency_ms"] >= 0


def _records(caplog) -> list[dict]:
    return [json.loads(rec.message) for rec in caplog.records if rec.name == "sambay_server.access"]


def _request_then_leave(stub, method: str, path: str, body: bytes) -> None:
    """One request through every policy around ``stub``, from a client that leaves right after sending it."""
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        pass

    app = policies.compose(stub, policies.settings())
    asyncio.run(app(http_scope(method, path, app=stub), receive, send))


def test_an_app_error_is_recorded_as_the_500_the_client_gets(caplog):
    """vLLM's app raising: Starlette's error middleware (outside the policies) sends the 500."""
    from starlette.middleware.errors import ServerErrorMiddleware

    class Boom(Stub):
        async def __call__(self, scope, receive, send):
            raise RuntimeError("boom")

    stub = Boom()
    app = ServerErrorMiddleware(policies.compose(stub, policies.settings()))
    before = count("unmatched", 500)
    caplog.set_level(logging.INFO, logger="sambay_server.access")
    try:
        r = call(app, "POST", "/boom", body=b"{}", stub=stub)
    except RuntimeError:  # Starlette re-raises after answering, for the server to log
        r = None
    assert r is None or r.status == 500
    assert count("unmatched", 500) == before + 1 and _records(caplog)[-1]["status"] == 500


def test_a_non_streamed_reply_after_the_client_left_is_499_not_200(caplog):
    """As vLLM's cancellation wrapper does: it sees the disconnect, then answers 200 ``null``."""

    class Cancelled(Stub):
        async def __call__(self, scope, receive, send):
            while (await receive())["type"] != "http.disconnect":
                pass
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"null"})

    stub = Cancelled()
    before_499, before_200 = count("unmatched", 499), count("unmatched", 200)
    caplog.set_level(logging.INFO, logger="sambay_server.access")
    _request_then_leave(stub, "POST", "/gone", b"{}")
    assert count("unmatched", 499) == before_499 + 1 and count("unmatched", 200) == before_200
    line = _records(caplog)[-1]
    assert line["status"] == 499 and line["bytes"] == 0


def test_a_stream_the_client_left_midway_keeps_its_200(caplog):
    class Streams(Stub):
        async def __call__(self, scope, receive, send):
            await receive()
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]}
            )
            await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
            while (await receive())["type"] != "http.disconnect":
                pass

    stub = Streams()
    caplog.set_level(logging.INFO, logger="sambay_server.access")
    _request_then_leave(stub, "GET", "/stream", b"")
    assert _records(caplog)[-1]["status"] == 200
