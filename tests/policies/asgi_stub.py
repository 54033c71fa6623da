"""Drive one policy at a time around a stub ASGI app: no engine, no server, no sockets.

(Imported by the tests of this directory as ``asgi_stub``; the fixtures are in ``conftest.py``.)

``Stub`` answers like vLLM's app would (a JSON body, an SSE stream, an error, a route table with
vLLM's own request models) and records what reached it; ``call`` sends one request through an ASGI
app and collects the response.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    messages: list[dict] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.body)


class Stub:
    """The inner app. ``reply(scope, body)`` returns (status, content type, chunks); default: 200 JSON
    ``{"ok": true}``. ``seen`` collects (scope, body) of every request that got through."""

    def __init__(self, reply=None, routes=(), engine=None) -> None:
        self.reply = reply or (lambda scope, body: (200, "application/json", [b'{"ok": true}']))
        self.seen: list[tuple[dict, bytes]] = []
        # What policies find in scope["app"]: vLLM's app state (engine client, server) and routes.
        self.state = SimpleNamespace(engine_client=engine, server=SimpleNamespace(should_exit=False))
        self.routes = list(routes)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].split(".")[-1]
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        self.seen.append((scope, body))
        status, ctype, chunks = self.reply(scope, body)
        headers = [(b"content-type", ctype.encode())]
        if len(chunks) == 1:
            headers.append((b"content-length", str(len(chunks[0])).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        for i, chunk in enumerate(chunks):
            await send({"type": "http.response.body", "body": chunk, "more_body": i < len(chunks) - 1})


def http_scope(method: str, path: str, headers=None, query: bytes = b"", app=None) -> dict:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": query,
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "app": app,
    }


async def acall(app, method="POST", path="/v1/completions", body=b"", headers=None, query=b"", chunks=None,
                stub=None, scope_extra=None, stall=False) -> Response:  # fmt: skip
    """One request through ``app``. ``chunks``: the body as several messages (a list of bytes);
    ``stall``: the last of them still says more is coming, and nothing more comes."""
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    scope = http_scope(method, path, headers, query, app=stub)
    scope.update(scope_extra or {})
    chunks = [body] if chunks is None else chunks
    incoming = [{"type": "http.request", "body": c, "more_body": stall or i < len(chunks) - 1}
                for i, c in enumerate(chunks)]  # fmt: skip

    async def receive():
        if incoming:
            return incoming.pop(0)
        await asyncio.sleep(3600)  # a client that sends nothing more

    out: list[dict] = []

    async def send(message):
        out.append(message)

    await app(scope, receive, send)
    start = next(m for m in out if m["type"] == "http.response.start")
    body_out = b"".join(m.get("body", b"") for m in out if m["type"] == "http.response.body")
    headers_out = {k.decode().lower(): v.decode() for k, v in start.get("headers") or []}
    return Response(start["status"], headers_out, body_out, out)


def call(*args, **kwargs) -> Response:
    return asyncio.run(acall(*args, **kwargs))
