"""``reasoning_content`` beside ``reasoning`` in chat responses, whole and streamed.

vLLM names the field ``reasoning`` since 0.11 (and dropped ``reasoning_content`` in 0.16); many
clients still read the older name (DeepSeek's convention: LiteLLM, Dify, the Vercel AI SDK, …).
Each message/delta that has one of the two gets the other. Bodies without either pass untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re

from . import routes
from .asgi import Message, Receive, Scope, Send, WholeResponse, content_type, is_sse
from .policy import Policy

REASONING_KEY = re.compile(rb'"reasoning(?:_content)?"\s*:')
BIG_BODY = 1 << 18  # rewrite larger bodies in a thread, off the event loop


def mirror(obj: dict) -> None:
    for choice in obj.get("choices") or []:
        for key in ("message", "delta"):
            part = choice.get(key) if isinstance(choice, dict) else None
            if isinstance(part, dict):
                if "reasoning" in part and "reasoning_content" not in part:
                    part["reasoning_content"] = part["reasoning"]
                elif "reasoning_content" in part and "reasoning" not in part:
                    part["reasoning"] = part["reasoning_content"]


def _dumps(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def mirror_json(body: bytes) -> bytes:
    if not REASONING_KEY.search(body):
        return body
    try:
        obj = json.loads(body)
    except ValueError:
        return body
    if not isinstance(obj, dict):
        return body
    mirror(obj)
    return _dumps(obj)


def mirror_event(event: bytes) -> bytes:
    if not REASONING_KEY.search(event):
        return event
    lines = event.split(b"\n")
    for i, line in enumerate(lines):
        if line.startswith(b"data: ") and line != b"data: [DONE]":
            with contextlib.suppress(ValueError):
                obj = json.loads(line[6:])
                if isinstance(obj, dict):
                    mirror(obj)
                    lines[i] = b"data: " + _dumps(obj)
    return b"\n".join(lines)


class ReasoningMirror(Policy):
    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not routes.is_chat(scope):
            return await self.app(scope, receive, send)

        async def rewrite(start: Message, body: bytes) -> tuple[Message, bytes]:
            if len(body) > BIG_BODY:
                return start, await asyncio.to_thread(mirror_json, body)
            return start, mirror_json(body)

        def whole_json(start: Message) -> bool:  # the length changes: held until complete
            return start["status"] == 200 and content_type(start).startswith(b"application/json")

        whole = WholeResponse(send, whole_json, rewrite)
        stream = _EventMirror(whole.send)

        async def mirrored(message: Message) -> None:
            if message["type"] == "http.response.start":
                stream.active = is_sse(message)
            await stream.send(message)

        await self.app(scope, receive, mirrored)


class _EventMirror:
    """Rewrites complete SSE events (``\\n\\n``-terminated); a partial event waits for its end."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.active = False
        self.pending = b""

    async def send(self, message: Message) -> None:
        if not self.active or message["type"] != "http.response.body":
            return await self._send(message)
        more = message.get("more_body", False)
        data = self.pending + message.get("body", b"")
        events, _, self.pending = data.rpartition(b"\n\n")
        out = b"".join(mirror_event(e) + b"\n\n" for e in events.split(b"\n\n")) if events else b""
        if not more and self.pending:
            out, self.pending = out + self.pending, b""
        if out or not more:
            await self._send({"type": "http.response.body", "body": out, "more_body": more})
