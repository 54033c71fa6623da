"""A request body is read whole, once, under a size limit and a deadline — before anything parses it.

413 past ``--max-request-bytes`` (from ``Content-Length`` before reading, or while reading a chunked
body), 408 when the body does not arrive within ``--body-timeout-s`` (a client that announces 1000
bytes and sends 10 would otherwise hold a connection and an admission slot forever). The body is
then replayed to the app and kept on the request's :class:`~.asgi.Exchange` for the policies after
this one, so nothing reads it twice.
"""

from __future__ import annotations

import asyncio

from .asgi import Receive, Scope, Send, exchange, header, send_error
from .policy import Policy
from .settings import Option

METHODS_WITH_BODY = ("POST", "PUT", "PATCH")
CLOSE = [(b"connection", b"close")]


def default_max_request_bytes(args) -> int:
    """1 MiB plus 64 bytes per token of context: room for a full-context prompt as JSON text."""
    return (1 << 20) + 64 * (getattr(args, "max_model_len", None) or 131072)


class _TooLarge(Exception):
    pass


class BodyLimits(Policy):
    options = (
        Option(
            "max_request_bytes",
            None,
            "largest request body; larger gets 413 before anything parses it "
            "(default: 1 MiB + 64 bytes per token of max_model_len)",
            type=int,
            derive=default_max_request_bytes,
        ),
        Option("body_timeout_s", 30.0, "a request body must arrive within this time (else 408)", type=float),
    )

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in METHODS_WITH_BODY:
            return await self.app(scope, receive, send)
        limit = self.settings.max_request_bytes
        too_large = f"request body larger than {limit} bytes (--max-request-bytes)"
        declared = header(scope.get("headers"), b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                return await send_error(send, 400, "invalid Content-Length")
            if size > limit:
                return await send_error(send, 413, too_large, headers=CLOSE)
        chunks: list[bytes] = []

        async def read_all() -> bool:
            total = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return False
                chunk = message.get("body", b"")
                total += len(chunk)
                if total > limit:
                    raise _TooLarge
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return True

        timeout = self.settings.body_timeout_s
        try:
            complete = await asyncio.wait_for(read_all(), timeout=timeout)
        except _TooLarge:
            return await send_error(send, 413, too_large, headers=CLOSE)
        except TimeoutError:
            message = f"request body not received within {timeout:g} s (--body-timeout-s)"
            return await send_error(send, 408, message, headers=CLOSE)
        if not complete:
            return  # the client left while sending
        body = exchange(scope).body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the client's disconnect, as vLLM expects

        await self.app(scope, replay, send)
