"""A real HTTP server that streams a scripted OpenAI chat completion with known timings.

The model name picks the script: ``scripted`` (reasoning, then answer, keep-alive comment, a
trailing finish chunk and a usage chunk whose token count is NOT the chunk count), ``scripted-429``
and ``scripted-500`` (OpenAI error bodies), ``scripted-midstream`` (an error event after output),
``scripted-truncated`` (no ``[DONE]``), and ``scripted-mix`` (ok, ok, 429, ok, 500, repeating).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

API_KEY = "sk-scripted"
MODELS = ["scripted-mix", "scripted", "scripted-429", "scripted-500", "scripted-midstream", "scripted-truncated"]


def _chunk(delta: dict | None = None, finish: str | None = None, usage: dict | None = None) -> str:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    payload = {
        "id": "chatcmpl-scripted",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "scripted",
        "choices": choices,
    }
    if usage is not None:
        payload["usage"] = usage
    return f"data: {json.dumps(payload)}\n\n"


def _reasoning(text: str) -> str:
    return _chunk({"reasoning": text, "reasoning_content": text})


# (seconds after the request arrived, bytes to send). Expected, in ms: TTFT 200, first answer 500,
# e2e 600 (the finish chunk at 700 and the usage chunk at 800 carry no output), ITL 50 50 200 50 50,
# 6 output chunks but usage says 9 completion tokens, so TPOT = (600 - 200) / (9 - 1) = 50.
HEAD = _chunk({"role": "assistant", "content": ""})  # empty content: not a token
ANSWER_1 = _chunk({"content": " answer"})
SCRIPT = [
    (0.00, HEAD),
    (0.05, ": keep-alive\n\n"),
    (0.20, _reasoning("Let")),
    (0.25, _reasoning(" me")),
    (0.30, _reasoning(" think")),
    (0.50, _chunk({"content": "The"})),
    (0.55, ANSWER_1[:25]),  # one event split over two writes: the client must join the line
    (0.55, ANSWER_1[25:]),
    (0.60, _chunk({"content": " is 4."})),
    (0.70, _chunk({}, finish="stop")),
    (
        0.80,
        _chunk(
            usage={
                "prompt_tokens": 12,
                "completion_tokens": 9,
                "total_tokens": 21,
                "completion_tokens_details": {"reasoning_tokens": 4},
            }
        ),
    ),
    (0.80, "data: [DONE]\n\n"),
]
MIDSTREAM = [
    (0.0, HEAD),
    (0.05, _chunk({"content": "Hi"})),
    (0.10, 'data: {"error": {"message": "engine died", "type": "internal_error", "code": 500}}\n\n'),
]
TRUNCATED = [(0.0, HEAD), (0.05, _chunk({"content": "Hi"})), (0.10, _chunk({"content": " there"}))]
MIX = itertools.cycle(["scripted", "scripted", "scripted-429", "scripted", "scripted-500"])
_mix_lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked bodies, like uvicorn
    disable_nagle_algorithm = True  # else small writes wait for delayed ACKs (40 ms)

    def log_message(self, *args) -> None:
        pass

    def _json(self, status: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") == f"Bearer {API_KEY}":
            return True
        self._json(401, {"error": {"message": "bad key", "type": "authentication_error", "code": 401}})
        return False

    def do_GET(self) -> None:
        if self._authorized():
            self._json(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in MODELS]})

    def do_POST(self) -> None:
        t0 = time.perf_counter()
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if not self._authorized():
            return
        model = body.get("model")
        if model == "scripted-mix":
            with _mix_lock:
                model = next(MIX)
        if model == "scripted-429":
            return self._json(
                429,
                {"error": {"message": "server busy: 40 requests in flight", "type": "rate_limit_error", "code": 429}},
                {"Retry-After": "1"},
            )
        if model == "scripted-500":
            return self._json(500, {"error": {"message": "boom", "type": "server_error", "code": 500}})
        script = {"scripted": SCRIPT, "scripted-midstream": MIDSTREAM, "scripted-truncated": TRUNCATED}[model]
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        for at, text in script:
            time.sleep(max(0.0, t0 + at - time.perf_counter()))
            data = text.encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


@pytest.fixture(scope="session")
def scripted_key() -> str:
    return API_KEY


@pytest.fixture(scope="session")
def scripted_server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
