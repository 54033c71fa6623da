"""``Cache-Control: no-cache`` and ``X-Accel-Buffering: no`` on every server-sent-event stream.

Behind nginx-style proxies a stream without them is buffered, and clients see their first token
only when the buffer fills (time-to-first-token lies).
"""

from __future__ import annotations

from .asgi import Receive, Scope, Send, is_sse
from .policy import Policy

NO_BUFFERING = [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]


class SseHeaders(Policy):
    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message):
            if message["type"] == "http.response.start" and is_sse(message):
                message = {**message, "headers": [*(message.get("headers") or []), *NO_BUFFERING]}
            await send(message)

        await self.app(scope, receive, with_headers)
