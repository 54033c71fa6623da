"""``sambay_server_requests_total{route, status}``, labelled by route *template*.

Labelling by the raw path would let any client create a metric series per random path; every path
no route serves is counted as ``unmatched``. The counter lives in prometheus' default registry,
which vLLM's ``/metrics`` serves. The status is the one the client was sent (:class:`~.asgi.Outcome`).
"""

from __future__ import annotations

from . import routes
from .asgi import Outcome, Receive, Scope, Send
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
        outcome = Outcome(receive, send)
        try:
            await outcome.call(self.app, scope)
        finally:
            requests_counter().labels(routes.template(scope), str(outcome.final)).inc()
