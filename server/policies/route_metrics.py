"""``sambay_server_requests_total{route, status}``, labelled by route *template*.

Labelling by the raw path would let any client create a metric series per random path; every path
no route serves is counted as ``unmatched``. The counter lives in prometheus' default registry,
which vLLM's ``/metrics`` serves.
"""

from __future__ import annotations

from . import routes
from .access_log import CLIENT_LEFT
from .asgi import Receive, Scope, Send
from .policy import Policy

_COUNTER = None


def requests_counter():
    """The process's one counter (created on first use; several apps in a process share it)."""
    global _COUNTER
    if _COUNTER is None:
        from prometheus_client import Counter

        _COUNTER = Counter("sambay_server_requests", "HTTP requests by route template and status", ["route", "status"])
    return _COUNTER


class RouteMetrics(Policy):
    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        status = CLIENT_LEFT

        async def observed(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            requests_counter().labels(routes.template(scope), str(status)).inc()
