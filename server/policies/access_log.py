"""One JSON line per request on the ``sambay_server.access`` logger.

Fields: ``request_id`` (the engine request's id, see :mod:`.request_id`), method, route template,
path (first 200 characters), status (the one the client was sent; see :class:`~.asgi.Outcome`:
500 for an app that raised, 499 only when the client left before the status line), bytes sent,
latency in ms. It replaces uvicorn's access log (sambay-serve turns that one off).
"""

from __future__ import annotations

import json
import logging
import time

from . import routes
from .asgi import Outcome, Receive, Scope, Send, exchange
from .policy import Policy

log = logging.getLogger("sambay_server.access")


class AccessLog(Policy):
    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        outcome = Outcome(receive, send)
        try:
            await outcome.call(self.app, scope)
        finally:
            line = {
                "request_id": exchange(scope).request_id,
                "method": scope["method"],
                "route": routes.template(scope),
                "path": scope["path"][:200],
                "status": outcome.final,
                "bytes": outcome.bytes,
                "latency_ms": round((time.perf_counter() - start) * 1e3, 1),
            }
            log.info(json.dumps(line))
