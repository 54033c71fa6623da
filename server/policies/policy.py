"""The shape of a policy: a small pure-ASGI class around the next app.

Pure ASGI (no ``BaseHTTPMiddleware``) so that streaming and vLLM's disconnect detection (it reads
``http.disconnect`` from ``receive``) keep working through every layer.
"""

from __future__ import annotations

from typing import ClassVar

from .asgi import ASGIApp, Receive, Scope, Send
from .settings import Option, Settings


class Policy:
    """One concern. Subclasses override :meth:`http` (and :meth:`lifespan` / :meth:`websocket`
    where they have something to do there); everything else passes through to ``self.app``."""

    options: ClassVar[tuple[Option, ...]] = ()

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    @classmethod
    def enabled(cls, settings: Settings) -> bool:
        """Whether this policy is in the chain at all for these settings."""
        return True

    @classmethod
    def check(cls, settings: Settings) -> None:
        """Raise :class:`~.settings.SettingsError` for settings that cannot work (at start-up)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            return await self.http(scope, receive, send)
        if kind == "lifespan":
            return await self.lifespan(scope, receive, send)
        if kind == "websocket":
            return await self.websocket(scope, receive, send)
        return await self.app(scope, receive, send)

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    async def lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    async def websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
