"""RequestId: one sane id for the engine (request header), the response (vLLM's echo) and the log."""

from __future__ import annotations

from asgi_stub import call

from sambay_server import policies
from sambay_server.policies.request_id import RequestId


def test_a_sane_client_id_is_kept_and_echoed(stub):
    app = RequestId(stub, policies.settings(request_id_headers=True))
    r = call(app, headers={"X-Request-Id": "abc-123"})
    scope, _ = stub.seen[-1]
    assert r.headers["x-request-id"] == "abc-123"
    assert [v for k, v in scope["headers"] if k == b"x-request-id"] == [b"abc-123"]
    assert scope["state"]["sambay"].request_id == "abc-123"


def test_missing_or_insane_ids_are_replaced_in_the_request(stub):
    app = RequestId(stub, policies.settings(request_id_headers=True))
    for given in (None, "x" * 200, "a b", "a\tb", ""):
        r = call(app, headers={"X-Request-Id": given} if given is not None else {})
        scope, _ = stub.seen[-1]
        sent = [v.decode() for k, v in scope["headers"] if k == b"x-request-id"]
        assert len(sent) == 1 and sent[0].startswith("req-") and r.headers["x-request-id"] == sent[0], given


def test_echo_follows_the_setting(stub):
    r = call(RequestId(stub, policies.settings(request_id_headers=False)), headers={"X-Request-Id": "abc"})
    assert "x-request-id" not in r.headers
    assert stub.seen[-1][0]["state"]["sambay"].request_id == "abc"  # still named for the engine and log


def test_policy_answers_carry_the_id_too(stub):
    app = policies.compose(stub, policies.settings(api_keys=("k",), request_id_headers=True))
    r = call(app, headers={"X-Request-Id": "who"})
    assert r.status == 401 and r.headers["x-request-id"] == "who"
