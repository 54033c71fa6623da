"""Policies that only touch responses: reasoning mirror, error shape, SSE headers."""

from __future__ import annotations

import json

from asgi_stub import Stub, call

from sambay_server import policies
from sambay_server.policies.error_shape import ErrorShape
from sambay_server.policies.reasoning_mirror import ReasoningMirror
from sambay_server.policies.sse_headers import SseHeaders

C = "/v1/chat/completions"


def replying(status, ctype, *chunks):
    return Stub(reply=lambda scope, body: (status, ctype, list(chunks)))


def test_mirror_whole_chat_response():
    body = json.dumps({"choices": [{"message": {"content": "5", "reasoning": "2+3"}}]}).encode()
    stub = replying(200, "application/json", body[:10], body[10:])
    r = call(ReasoningMirror(stub, policies.settings()), path=C)
    message = r.json()["choices"][0]["message"]
    assert message["reasoning_content"] == message["reasoning"] == "2+3"
    assert int(r.headers["content-length"]) == len(r.body)


def test_mirror_stream_events_split_across_chunks():
    events = [{"choices": [{"delta": {"reasoning": "th"}}]}, {"choices": [{"delta": {"content": "x"}}]}]
    raw = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    stub = replying(200, "text/event-stream", raw[:17], raw[17:40], raw[40:])
    r = call(ReasoningMirror(stub, policies.settings()), path=C)
    out = [json.loads(line[6:]) for line in r.body.split(b"\n") if line.startswith(b"data: {")]
    assert out[0]["choices"][0]["delta"] == {"reasoning": "th", "reasoning_content": "th"}
    assert out[1]["choices"][0]["delta"] == {"content": "x"} and r.body.endswith(b"data: [DONE]\n\n")


def test_mirror_leaves_other_routes_and_bodies_alone():
    body = json.dumps({"choices": [{"text": "x", "reasoning": "r"}]}).encode()
    assert call(ReasoningMirror(replying(200, "application/json", body), policies.settings())).body == body
    plain = b'{"choices": [{"message": {"content": "x"}}]}'
    assert call(ReasoningMirror(replying(200, "application/json", plain), policies.settings()), path=C).body == plain


def test_framework_errors_get_the_openai_shape():
    stub = replying(404, "application/json", b'{"detail": "Not Found"}')
    r = call(ErrorShape(stub, policies.settings()), "GET", "/nope")
    assert r.status == 404 and r.json() == {
        "error": {"message": "Not Found", "type": "NotFoundError", "param": None, "code": 404}
    }
    r = call(ErrorShape(replying(405, "text/plain", b"Method Not Allowed"), policies.settings()), "GET", "/x")
    assert r.status == 405 and r.json()["error"]["code"] == 405 and r.headers["content-type"] == "application/json"


def test_openai_errors_and_successes_pass_untouched():
    vllm_error = b'{"error": {"message": "m", "type": "BadRequestError", "param": "n", "code": 400}}'
    assert call(ErrorShape(replying(400, "application/json", vllm_error), policies.settings())).body == vllm_error
    assert call(ErrorShape(replying(200, "application/json", b"[1]"), policies.settings())).body == b"[1]"


def test_sse_responses_forbid_proxy_buffering():
    r = call(SseHeaders(replying(200, "text/event-stream", b"data: x\n\n"), policies.settings()))
    assert r.headers["cache-control"] == "no-cache" and r.headers["x-accel-buffering"] == "no"
    r = call(SseHeaders(replying(200, "application/json", b"{}"), policies.settings()))
    assert "x-accel-buffering" not in r.headers
