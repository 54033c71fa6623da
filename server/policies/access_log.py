"""One JSON line per request on the ``sambay_server.access`` logger.

Fields: ``request_id`` (the engine request's id, see :mod:`.request_id`), method, route template,
path (first 200 characters), status (499 when the client left before any response), bytes sent,
latency in ms. It replaces uvicorn's access log (sambay-serve turns that one off).
"""

from __future__ import annotations

import json
import logging
import time

from . import routes
from .asgi import Receive, Scope, Send, exchange
from .policy import Policy

log = logging.getLogger("sambay_server.access")
CLIENT_LEFT = 499  # no response was started: the client went away first (nginx's convention)


class AccessLog(Policy):
    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        seen = {"status": 0, "bytes": 0}

        async def observed(message):
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
            elif message["type"] == "http.response.body":
                seen["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            line = {
                "request_id": exchange(scope).request_id,
                "method": scope["method"],
                "route": routes.template(scope),
                "path": scope["path"][:200],
                "status": seen["status"] or CLIENT_LEFT,
                "bytes": seen["bytes"],
                "latency_ms": round((time.perf_counter() - start) * 1e3, 1),
            }
            log.info(json.dumps(line))
