"""What every policy shares: ASGI types, the per-request record, JSON answers, and the one
implementation of "hold a whole response, then rewrite it"."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..errors import error_body

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass
class Exchange:
    """What the policies learn about one HTTP request and tell each other (kept in
    ``scope["state"]``, where Starlette keeps ``request.state``)."""

    request_id: str = ""
    body: bytes | None = None  # the whole request body, once the body-limit policy has read it
    api_key_id: str | None = None  # SHA-256 prefix of the key the request authenticated with
    data: Any = None  # the body decoded as JSON, once the field-validation policy has judged it
    admission: Any = None  # the admission policy's ticket for this request (see admission.Ticket)


def exchange(scope: Scope) -> Exchange:
    """This request's :class:`Exchange` (created on first use)."""
    state = scope.setdefault("state", {})
    record = state.get("sambay")
    if record is None:
        record = state["sambay"] = Exchange()
    return record


CLIENT_LEFT = 499  # the client went away before the status line reached it (nginx's convention)
SERVER_ERROR = 500  # what Starlette's error middleware (or uvicorn) sends for an app that raised


class Outcome:
    """What the client of one exchange was actually sent: the status of record for logs and metrics.

    vLLM's app sits inside our policies, Starlette's error middleware outside them: an exception
    passes up through the policies *before* its 500 is sent, and a non-streamed request whose client
    left is answered 200 ``null`` by vLLM's cancellation wrapper into a closed connection (uvicorn drops
    it). So the status of record is the one sent while the client was there; 499 when the client left
    before any status line reached it; 500 when the app raised (or returned) without starting one.
    """

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive, self._send = receive, send
        self.started: int | None = None  # the status line sent while the client was connected
        self.bytes = 0
        self.client_left = False
        self.final = CLIENT_LEFT  # set by call(); what it reports if the app never ran

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self.client_left = True
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start" and not self.client_left:
            self.started = message["status"]
        elif message["type"] == "http.response.body" and self.started is not None and not self.client_left:
            self.bytes += len(message.get("body", b""))
        await self._send(message)

    async def call(self, app: ASGIApp, scope: Scope) -> None:
        """Run ``app`` on this exchange; :attr:`final` holds the status of record however it ends."""
        try:
            await app(scope, self.receive, self.send)
        except BaseException as exc:
            self.final = self.status(exc)
            raise
        self.final = self.status(None)

    def status(self, error: BaseException | None) -> int:
        """The status of record once the app has returned (``error``: what it raised, if anything)."""
        if self.started is not None:
            return self.started
        if self.client_left or isinstance(error, asyncio.CancelledError):
            return CLIENT_LEFT
        return SERVER_ERROR  # raised, or returned without answering: the client gets a 500


def header(headers: list[tuple[bytes, bytes]] | None, name: bytes) -> bytes | None:
    """The last value of header ``name`` (lower case) in an ASGI header list."""
    found = None
    for key, value in headers or []:
        if key.lower() == name:
            found = value
    return found


def content_type(message: Message) -> bytes:
    return header(message.get("headers"), b"content-type") or b""


def is_sse(message: Message) -> bool:
    return content_type(message).startswith(b"text/event-stream")


async def send_json(send: Send, status: int, body: dict, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """Answer with a JSON body (``Content-Length`` set)."""
    payload = json.dumps(body).encode()
    start = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": start + (headers or [])})
    await send({"type": "http.response.body", "body": payload, "more_body": False})


async def send_error(send: Send, status: int, message: str, param: str | None = None, headers=None) -> None:
    """Answer with an OpenAI-style error body."""
    await send_json(send, status, error_body(status, message, param), headers)


Rewrite = Callable[[Message, bytes], Awaitable[tuple[Message, bytes]]]


class WholeResponse:
    """A ``send`` that holds back a response it was asked to rewrite until its body is complete,
    then sends the rewritten start (``Content-Length`` corrected) and body in one piece.

    ``hold(start)`` decides per response; responses not held pass through untouched, so streams
    keep streaming. Used by every policy that rewrites a JSON response, so the buffering exists once.
    """

    def __init__(self, send: Send, hold: Callable[[Message], bool], rewrite: Rewrite) -> None:
        self._send, self._hold, self._rewrite = send, hold, rewrite
        self._start: Message | None = None
        self._chunks: list[bytes] = []

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            if self._hold(message):
                self._start = message
                return
            return await self._send(message)
        if self._start is None or message["type"] != "http.response.body":
            return await self._send(message)
        self._chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        start, body = await self._rewrite(self._start, b"".join(self._chunks))
        self._start, self._chunks = None, []
        headers = [(k, v) for k, v in start.get("headers") or [] if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await self._send({**start, "headers": headers})
        await self._send({"type": "http.response.body", "body": body, "more_body": False})
