"""While the engine is dead: 503 for new requests, and 503 instead of vLLM's 500 for those in flight.

The fault is not the request's, and the process is about to exit and be restarted (see
:mod:`.engine_watch`), so clients should retry — elsewhere or later. Streams already begun keep their
200 and get the same 503 error as their last event. Only a *dead* engine (:mod:`.engine_state`)
changes anything: after a deliberate shutdown vLLM's own answers pass through unchanged.
"""

from __future__ import annotations

import contextlib
import json

from . import engine_state, routes
from .asgi import Message, Receive, Scope, Send, WholeResponse, is_sse, send_error
from .policy import Policy

DEAD = "the engine is dead; the server is restarting"


def as_engine_death(error_object: dict) -> dict:
    """vLLM's 500 error object, restated as the 503 it is."""
    error = error_object.get("error") if isinstance(error_object, dict) else None
    if isinstance(error, dict) and error.get("code") == 500:
        error.update(
            code=503,
            type="ServiceUnavailableError",
            message=f"the engine died; the server restarts ({error.get('message', '')})",
        )
    return error_object


class DeadEngine(Policy):
    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        liveness = engine_state.LIVENESS
        if liveness.dead and not routes.is_open(scope):
            return await send_error(send, 503, DEAD)
        engine = engine_state.engine_of(scope)
        if engine is None:
            return await self.app(scope, receive, send)

        def died() -> bool:
            return engine_state.LIVENESS.judge(engine)

        async def rewrite(start: Message, body: bytes) -> tuple[Message, bytes]:
            try:
                obj = as_engine_death(json.loads(body))
            except ValueError:
                obj = {"error": {"message": DEAD, "type": "ServiceUnavailableError", "param": None, "code": 503}}
            return {**start, "status": 503}, json.dumps(obj).encode()

        whole = WholeResponse(send, lambda start: start["status"] == 500 and died(), rewrite)
        streaming = False

        async def relabelled(message: Message) -> None:
            nonlocal streaming
            if message["type"] == "http.response.start":
                streaming = is_sse(message)
            elif streaming and message["type"] == "http.response.body":
                chunk = message.get("body", b"")
                if b'"error"' in chunk and died():
                    message = {**message, "body": _relabel_events(chunk)}
            await whole.send(message)

        await self.app(scope, receive, relabelled)


def _relabel_events(chunk: bytes) -> bytes:
    lines = chunk.split(b"\n")
    for i, line in enumerate(lines):
        if line.startswith(b"data: {"):
            with contextlib.suppress(ValueError):
                lines[i] = b"data: " + json.dumps(as_engine_death(json.loads(line[6:]))).encode()
    return b"\n".join(lines)
