"""A request is as much work as the sequences it asks for: ``n`` bounded, and charged in full.

vLLM turns one request into ``n`` sequences per prompt (``n`` samples, or ``n`` beams under
``use_beam_search``), and a completion's ``prompt`` list or a batch chat's ``messages`` list into one
engine request per entry. Counted as one request, ``n=1000`` passed ``--max-pending`` and starved
every other client for 11.6 s on the tiny CPU model. So, once the body is known:

- ``n`` above ``--max-n`` is refused (400 naming the limit);
- a request fanning out into more sequences than ``--max-pending`` could ever admit is refused (400:
  retrying cannot help);
- otherwise the sequences beyond the one slot admission took are charged to the request's admission
  ticket; when they are not free the answer is 429 + ``Retry-After``, as for any request over the limit.

vLLM has no such bound (its ``n`` is any positive integer), hence this policy.
"""

from __future__ import annotations

from typing import Any

from . import routes
from .admission import RETRY_AFTER
from .asgi import Receive, Scope, Send, exchange, send_error
from .policy import Policy
from .settings import Option, SettingsError

DEFAULT_MAX_N = 64
BATCH_CHAT_PATHS = ("/v1/chat/completions/batch",)
COMPLETION_PATHS = ("/v1/completions",)


def prompts_in(path: str, data: dict) -> int:
    """How many engine requests one body becomes (before ``n``)."""
    if path in COMPLETION_PATHS:
        prompt = data.get("prompt")
        if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
            return len(prompt)  # a list of texts or of token lists: one request each
        return 1
    if path in BATCH_CHAT_PATHS:
        messages = data.get("messages")
        return len(messages) if isinstance(messages, list) and messages else 1
    return 1


def n_of(data: dict) -> int | None:
    """The request's ``n`` when it is a plain integer (other types are vLLM's to refuse)."""
    n = data.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) else None


def sequences(path: str, data: Any) -> int:
    """Sequences the engine will run for this body (1 for anything that is not a JSON object)."""
    if not isinstance(data, dict):
        return 1
    n = n_of(data)
    return prompts_in(path, data) * max(n if n is not None else 1, 1)


def default_max_n(args) -> int:
    """64, or --max-pending where that is smaller (a larger n could never be admitted)."""
    return min(DEFAULT_MAX_N, getattr(args, "max_pending", None) or DEFAULT_MAX_N)


class FanOut(Policy):
    options = (
        Option(
            "max_n",
            None,
            "largest n (samples or beams per prompt) a request may ask for; larger gets 400. "
            f"Default {DEFAULT_MAX_N} (or --max-pending if smaller): what sampling-based evaluation of a "
            "reasoning model uses (pass@k and majority votes over up to 64 samples per problem), half of "
            "OpenAI's own cap of 128",
            type=int,
            derive=default_max_n,
        ),
    )

    @classmethod
    def check(cls, settings) -> None:
        if settings.max_n < 1:
            raise SettingsError(f"--max-n must be at least 1 (got {settings.max_n})")
        if settings.max_n > settings.max_pending:
            raise SettingsError(
                f"--max-n {settings.max_n} is more than --max-pending {settings.max_pending}: a request for "
                "that many sequences could never be admitted; lower --max-n or raise --max-pending"
            )

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        record = exchange(scope)
        if not isinstance(record.data, dict) or not routes.is_admitted(scope):
            return await self.app(scope, receive, send)
        n = n_of(record.data)
        if n is not None and n > self.settings.max_n:
            message = f"n: {n} is more than this server allows per request (--max-n {self.settings.max_n})"
            return await send_error(send, 400, message, "n")
        wanted = sequences(scope["path"], record.data)
        limit = self.settings.max_pending
        if wanted > limit:
            prompts = prompts_in(scope["path"], record.data)
            message = (
                f"this request fans out into {wanted} sequences ({prompts} prompts x n {n or 1}), more than "
                f"this server admits at once (--max-pending {limit}); split it into smaller requests"
            )
            return await send_error(send, 400, message, "n")
        ticket = record.admission
        if ticket is not None and not ticket.take(wanted - 1):
            return await send_error(send, 429, ticket.busy_message(wanted), headers=RETRY_AFTER)
        await self.app(scope, receive, send)
