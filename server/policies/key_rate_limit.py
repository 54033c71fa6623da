"""Per API key: at most ``--rate-limit-per-key`` requests per second; beyond that 429 + Retry-After.

A token bucket per key (keys are vLLM's ``--api-key``, several allowed; the bucket is named by the
key's digest prefix that :mod:`.auth` puts on the request, never by the key). Each key may burst
one second's worth of requests (at least one), then is held to the rate. What counts is work for
the engine (:func:`.routes.is_admitted`), as in :mod:`.admission`, which this runs before: a client
over its own rate is turned away without taking a slot from the others.
"""

from __future__ import annotations

import math
import time

from . import routes
from .asgi import Receive, Scope, Send, exchange, send_error
from .policy import Policy
from .settings import Option, SettingsError


class KeyRateLimit(Policy):
    options = (
        Option(
            "rate_limit_per_key",
            None,
            "requests per second each API key may start (bursts of one second's worth); beyond it "
            "429 + Retry-After. Needs --api-key",
            type=float,
        ),
    )
    clock = staticmethod(time.monotonic)

    def __init__(self, app, settings) -> None:
        super().__init__(app, settings)
        self.rate = float(settings.rate_limit_per_key)
        self.burst = max(1.0, self.rate)
        self.buckets: dict[str, tuple[float, float]] = {}  # key id -> (tokens, when counted)

    @classmethod
    def enabled(cls, settings) -> bool:
        return settings.rate_limit_per_key is not None

    @classmethod
    def check(cls, settings) -> None:
        rate = settings.rate_limit_per_key
        if rate is None:
            return
        if not rate > 0:
            raise SettingsError(f"--rate-limit-per-key must be positive (got {rate})")
        if not settings.api_keys:
            raise SettingsError("--rate-limit-per-key limits each API key: give the keys with --api-key")

    def wait_s(self, key: str) -> float:
        """Take one request from ``key``'s bucket: 0 if it had one, else seconds until it will."""
        now = self.clock()
        tokens, then = self.buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        if tokens >= 1:
            self.buckets[key] = (tokens - 1, now)
            return 0.0
        self.buckets[key] = (tokens, now)
        return (1 - tokens) / self.rate

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = exchange(scope).api_key_id
        if key is not None and routes.is_admitted(scope):
            wait = self.wait_s(key)
            if wait > 0:
                retry = max(1, math.ceil(wait))
                message = f"rate limit of this API key: {self.rate:g} requests/s (--rate-limit-per-key)"
                return await send_error(send, 429, message, headers=[(b"retry-after", str(retry).encode())])
        await self.app(scope, receive, send)
