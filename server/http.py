"""A header deadline for uvicorn's HTTP protocol: the one limit an ASGI middleware cannot set.

The app is only called once the request line and headers are complete, so a client that
trickles headers (slowloris) holds a connection forever in uvicorn (which has a keep-alive but no
header timeout). This protocol closes a connection whose headers are not complete within
``header_timeout_s`` of the connection opening or of the previous response ending. Passed to
uvicorn as ``http=`` through vLLM's ``run_server(args, **uvicorn_kwargs)``.
"""

from __future__ import annotations

import asyncio

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Base

    _HEADERS_DONE = "on_headers_complete"
except ImportError:  # pragma: no cover - no httptools: uvicorn's h11 protocol
    from uvicorn.protocols.http.h11_impl import H11Protocol as _Base

    _HEADERS_DONE = None


class TimedHttpProtocol(_Base):
    """uvicorn's protocol, plus: headers must arrive within ``header_timeout_s``."""

    header_timeout_s: float = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    def _arm(self, extra: float = 0.0) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout_s + extra, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if _HEADERS_DONE:
            self._arm()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if _HEADERS_DONE and not self.transport.is_closing():
            # keep-alive: the next request's headers get the idle allowance plus the header deadline
            self._arm(extra=float(self.timeout_keep_alive))
