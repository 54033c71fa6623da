"""At most ``--max-pending`` requests for the engine at once; beyond that 429 + ``Retry-After: 1``.

vLLM queues without bound by default (its own ``--max-num-queued-reqs``, where a release has it,
answers 503 — "go elsewhere" — rather than 429 "slow down"). A request is counted from the moment it
is admitted until its HTTP exchange ends, so a stream holds its slot while it streams and a client
that leaves frees it. Which requests count: :func:`.routes.is_admitted`.
"""

from __future__ import annotations

from . import routes
from .asgi import Receive, Scope, Send, send_error
from .policy import Policy
from .settings import Option

RETRY_AFTER_S = 1


class Admission(Policy):
    options = (
        Option(
            "max_pending",
            256,
            "requests admitted at once (running + queued + being read); beyond it 429 + Retry-After",
            type=int,
        ),
    )

    def __init__(self, app, settings) -> None:
        super().__init__(app, settings)
        self.in_flight = 0

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not routes.is_admitted(scope):
            return await self.app(scope, receive, send)
        limit = self.settings.max_pending
        if self.in_flight >= limit:
            message = f"server busy: {self.in_flight} requests in flight (--max-pending {limit}); retry later"
            return await send_error(send, 429, message, headers=[(b"retry-after", str(RETRY_AFTER_S).encode())])
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
