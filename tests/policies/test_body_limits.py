"""BodyLimits: 413 / 408 before anything parses the body; the body read once and replayed."""

from __future__ import annotations

from asgi_stub import call

from sambay_server import policies
from sambay_server.policies.body_limits import BodyLimits, default_max_request_bytes


def limited(stub):
    return BodyLimits(stub, policies.settings(max_request_bytes=100, body_timeout_s=0.2))


def test_declared_too_large_is_413_without_reading(stub):
    r = call(limited(stub), body=b"x" * 10, headers={"Content-Length": "101"})
    assert r.status == 413 and r.headers["connection"] == "close"
    assert "--max-request-bytes" in r.json()["error"]["message"] and not stub.seen


def test_chunked_too_large_is_413_while_reading(stub):
    r = call(limited(stub), chunks=[b"x" * 60, b"x" * 60, b"never read"])
    assert r.status == 413 and not stub.seen


def test_a_stalled_body_is_408(stub):
    r = call(limited(stub), chunks=[b'{"prompt": '], headers={"Content-Length": "50"}, stall=True)
    assert r.status == 408 and "--body-timeout-s" in r.json()["error"]["message"] and not stub.seen


def test_bad_content_length_is_400(stub):
    assert call(limited(stub), headers={"Content-Length": "ten"}).status == 400


def test_the_body_is_replayed_whole_and_kept_for_later_policies(stub):
    r = call(limited(stub), chunks=[b'{"a":', b" 1", b"}"])
    scope, body = stub.seen[-1]
    assert r.status == 200 and body == b'{"a": 1}' and scope["state"]["sambay"].body == b'{"a": 1}'


def test_requests_without_a_body_pass(stub):
    assert call(limited(stub), "GET", "/v1/models", headers={"Content-Length": "999"}).status == 200


def test_default_limit_grows_with_the_context():
    class Args:
        max_model_len = 2048

    assert default_max_request_bytes(Args()) == (1 << 20) + 64 * 2048
    assert policies.settings().max_request_bytes == (1 << 20) + 64 * 131072  # no model length known
