"""ApiKeyAuth: vLLM's token check, applied to every route but /health and /metrics."""

from __future__ import annotations

import asyncio

from asgi_stub import Stub, call

from sambay_server import policies
from sambay_server.policies.auth import ApiKeyAuth, key_id

KEYS = ("k1", "k2")


def guarded(stub):
    return ApiKeyAuth(stub, policies.settings(api_keys=KEYS))


def test_every_route_needs_a_key_but_the_probes(stub):
    app = guarded(stub)
    for method, path in (("POST", "/v1/completions"), ("POST", "/tokenize"), ("GET", "/v1/models"),
                         ("POST", "/invocations"), ("GET", "/nope")):  # fmt: skip
        r = call(app, method, path)
        assert r.status == 401 and r.headers["www-authenticate"] == "Bearer", path
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert call(app, "GET", "/health").status == 200
    assert call(app, "GET", "/metrics").status == 200
    assert call(app, "GET", "/health", query=b"deep=true").status == 401  # generates: guarded
    assert call(app, "OPTIONS", "/v1/completions").status == 200  # CORS preflight


def test_any_of_several_keys_case_insensitive_scheme(stub):
    app = guarded(stub)
    for value in ("Bearer k1", "bearer k2", "BEARER k1"):
        assert call(app, headers={"Authorization": value}).status == 200, value
    for value in ("Bearer k3", "Basic k1", "k1", "Bearer  k1", ""):
        assert call(app, headers={"Authorization": value}).status == 401, value


def test_the_request_is_tagged_with_its_key_not_the_key_itself(stub):
    call(guarded(stub), headers={"Authorization": "Bearer k2"})
    scope, _ = stub.seen[-1]
    tag = scope["state"]["sambay"].api_key_id
    assert tag == key_id("Bearer k2") != key_id("Bearer k1") and "k2" not in tag


def test_websocket_without_key_is_closed(stub):
    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "websocket", "path": "/v1/realtime", "headers": []}
    asyncio.run(guarded(stub)(scope, None, send))
    assert sent == [{"type": "websocket.close", "code": 1008}]


def test_off_without_keys():
    assert not ApiKeyAuth.enabled(policies.settings())
    app = policies.compose(Stub(), policies.settings())
    assert call(app, "POST", "/v1/completions", body={"prompt": "x"}).status == 200
