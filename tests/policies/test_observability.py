"""AccessLog and RouteMetrics: one line and one count per request, labelled by route template."""

from __future__ import annotations

import asyncio
import json
import logging

from asgi_stub import Stub, acall, call
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
