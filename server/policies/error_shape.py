"""One error shape: any error response without an OpenAI ``error`` object gets one.

vLLM answers its own errors as ``{"error": {message, type, param, code}}``, but the framework
underneath (Starlette) answers an unknown path 404 and a wrong method 405 as ``{"detail": "..."}``;
clients expect one shape. The status and other headers are kept; streams are not touched.
"""

from __future__ import annotations

import json
from http import HTTPStatus

from ..errors import error_body
from .asgi import Message, Receive, Scope, Send, WholeResponse, is_sse
from .policy import Policy


async def as_openai_error(start: Message, body: bytes) -> tuple[Message, bytes]:
    try:
        obj = json.loads(body) if body else {}
    except ValueError:
        obj = {"detail": body.decode(errors="replace")[:500]}
    if isinstance(obj, dict) and isinstance(obj.get("error"), dict):
        return start, body
    detail = obj.get("detail") if isinstance(obj, dict) else None
    text = detail if isinstance(detail, str) else (json.dumps(obj)[:500] if obj else "")
    status = start["status"]
    headers = [(k, v) for k, v in start.get("headers") or [] if k.lower() != b"content-type"]
    headers.append((b"content-type", b"application/json"))
    return {**start, "headers": headers}, json.dumps(error_body(status, text or HTTPStatus(status).phrase)).encode()


class ErrorShape(Policy):
    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        whole = WholeResponse(send, lambda start: start["status"] >= 400 and not is_sse(start), as_openai_error)
        await self.app(scope, receive, whole.send)
