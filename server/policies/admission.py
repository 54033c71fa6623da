"""At most ``--max-pending`` requests for the engine at once; beyond that 429 + ``Retry-After: 1``.

vLLM queues without bound by default (its own ``--max-num-queued-reqs``, where a release has it,
answers 503 — "go elsewhere" — rather than 429 "slow down"). A request is counted from the moment it
is admitted until its HTTP exchange ends, so a stream holds its slot while it streams and a client
that leaves frees it. Which requests count: :func:`.routes.is_admitted`.

The unit is a *sequence*: a request is admitted at one slot when its headers arrive (before its body
is read, so slow bodies count too), and :mod:`.fan_out` charges the rest of what it asks for (``n``
sequences per prompt, a list of prompts) through the request's :class:`Ticket` once the body is known.
"""

from __future__ import annotations

from . import routes
from .asgi import Receive, Scope, Send, exchange, send_error
from .policy import Policy
from .settings import Option

RETRY_AFTER_S = 1
RETRY_AFTER = [(b"retry-after", str(RETRY_AFTER_S).encode())]


class Ticket:
    """One admitted request's share of ``--max-pending``: one slot at admission, more on demand."""

    def __init__(self, policy: Admission) -> None:
        self.policy = policy
        self.held = 1

    def take(self, more: int) -> bool:
        """Charge ``more`` slots to this request; False (nothing charged) when they are not free."""
        if more <= 0:
            return True
        if self.policy.in_flight + more > self.policy.settings.max_pending:
            return False
        self.policy.in_flight += more
        self.held += more
        return True

    def busy_message(self, wanted: int) -> str:
        policy = self.policy
        limit = policy.settings.max_pending
        return (
            f"server busy: this request needs {wanted} sequences and {policy.in_flight} of --max-pending {limit} "
            "are in use; retry later"
        )


class Admission(Policy):
    options = (
        Option(
            "max_pending",
            256,
            "sequences admitted at once (running + queued + being read; a request for n sequences counts n); "
            "beyond it 429 + Retry-After",
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
            return await send_error(send, 429, message, headers=RETRY_AFTER)
        self.in_flight += 1
        ticket = exchange(scope).admission = Ticket(self)
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= ticket.held
