"""The limits on a request's head, set in uvicorn's HTTP protocol: the ones an ASGI middleware cannot set.

The app is only called once the request line and headers are complete, so by then a slow or huge
head has already been waited for and buffered. This protocol (uvicorn's httptools one, passed as
``http=`` through vLLM's ``run_server(args, **uvicorn_kwargs)``) adds:

- a deadline: a connection whose headers are not complete within ``header_timeout_s`` of the
  connection opening or of the previous response ending is closed (slowloris; uvicorn has a
  keep-alive timeout but no header timeout);
- a size and a count: a head of more than ``max_header_bytes`` or more than ``max_header_fields``
  header fields is answered 431 (Request Header Fields Too Large) with a small OpenAI-style error
  body, and the connection is closed. uvicorn and httptools have neither: a 1 MB header or 20 000
  headers were accepted (every byte buffered, every field copied into the ASGI scope). After the
  431 the connection lingers for up to ``LINGER_S``: our side is shut for writing and whatever
  the client still sends is read and dropped, because closing a socket with unread data sends a
  reset that makes the client lose the 431 it has not read yet (nginx's lingering close).

The bytes are counted twice, because httptools hands a header over only once it is complete: as
received while the head is incomplete (so a single endless header is cut off after the limit plus
one read from the socket, not buffered whole), and per field as parsed (name + value + 4 bytes for
``": "`` and CRLF, plus the request target), which is exact when a whole head arrives in one read.

vLLM has ``--h11-max-incomplete-event-size`` (4 MB) and ``--h11-max-header-count`` (256), but the
first limits uvicorn's h11 parser only, and uvicorn serves with httptools whenever it is installed
(it comes with vLLM), while the second sets a ``Config`` attribute uvicorn (0.55) never reads: under
stock ``vllm serve`` neither limits anything. sambay-serve refuses both on the command line, naming
its own flags, and hands its byte limit to the first, so that uvicorn's h11 protocol (used only
where httptools is missing) gets the size (answered 400 by h11) but not the count.
"""

from __future__ import annotations

import asyncio
import json
import logging
from http import HTTPStatus

from .errors import error_body
from .policies.settings import Option, Settings, SettingsError

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Base

    _HEADERS_DONE = "on_headers_complete"
except ImportError:  # pragma: no cover - no httptools: uvicorn's h11 protocol
    from uvicorn.protocols.http.h11_impl import H11Protocol as _Base

    _HEADERS_DONE = None

logger = logging.getLogger("sambay_server.http")

LINGER_S = 2.0  # after a 431: how long the rest of a refused head is read and dropped
VLLM_H11_FLAGS = {"--h11-max-header-count": "max_header_fields", "--h11-max-incomplete-event-size": "max_header_bytes"}
MIN_HEADER_BYTES = 1024  # an OpenAI SDK request's head is ~0.8 KiB: any smaller limit refuses every client

OPTIONS = (
    Option(
        "header_timeout_s",
        10.0,
        "request headers must arrive within this time (else the connection is closed)",
        type=float,
    ),
    Option(
        "max_header_fields",
        100,
        "most header fields in one request; more gets 431 and the connection closed. 100 is Apache's "
        "and Envoy's default: an OpenAI SDK sends ~15, proxies and tracing add a handful",
        type=int,
    ),
    Option(
        "max_header_bytes",
        32 * 1024,
        "largest request head (request line + header fields), in bytes; larger gets 431 and the connection "
        "closed. 32 KiB is what nginx's default buffers pass (4 x 8 KiB): room for long bearer tokens and "
        "cookies, while a 1 MB header is cut off after one socket read",
        type=int,
    ),
)


def settings_from_args(args) -> Settings:
    return Settings.from_args(OPTIONS, args)


def check(settings: Settings) -> None:
    """Refuse limits no client could meet (raises :class:`SettingsError` naming the flag)."""
    if not settings.header_timeout_s > 0:
        raise SettingsError(f"--header-timeout-s must be > 0 (got {settings.header_timeout_s})")
    if settings.max_header_fields < 1:
        raise SettingsError(f"--max-header-fields must be >= 1 (got {settings.max_header_fields})")
    if settings.max_header_bytes < MIN_HEADER_BYTES:
        raise SettingsError(
            f"--max-header-bytes must be >= {MIN_HEADER_BYTES} (got {settings.max_header_bytes}): "
            "smaller refuses the head of every ordinary client request"
        )


def configure(settings: Settings) -> None:
    """Apply the settings to :class:`TimedHttpProtocol` (uvicorn constructs it once per connection)."""
    check(settings)
    TimedHttpProtocol.header_timeout_s = settings.header_timeout_s
    TimedHttpProtocol.max_header_fields = settings.max_header_fields
    TimedHttpProtocol.max_header_bytes = settings.max_header_bytes


class HeadTooLarge(Exception):
    """Raised inside a parser callback to stop httptools; answered 431 (see ``send_400_response``)."""


class TimedHttpProtocol(_Base):
    """uvicorn's protocol, plus: headers within ``header_timeout_s``, at most ``max_header_fields``
    fields and ``max_header_bytes`` bytes."""

    header_timeout_s: float = 10.0
    max_header_fields: int = 100
    max_header_bytes: int = 32 * 1024
    _header_timer: asyncio.TimerHandle | None = None
    _reading_head: bool = True  # the bytes arriving now belong to a request line or headers
    _head_bytes_received = 0
    _head_fields = 0
    _head_field_bytes = 0
    _head_refusal: str | None = None
    _refused = False  # a 431 went out: the rest of the connection is drained, never parsed
    _linger: asyncio.TimerHandle | None = None

    # -- the deadline

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
        if self._linger is not None:
            self._linger.cancel()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if _HEADERS_DONE and not self.transport.is_closing():
            # keep-alive: the next request's headers get the idle allowance plus the header deadline
            self._arm(extra=float(self.timeout_keep_alive))

    # -- the size and the count

    def data_received(self, data: bytes) -> None:
        if not _HEADERS_DONE:  # pragma: no cover - h11 bounds the head itself
            return super().data_received(data)
        if self._refused:
            return  # lingering after a 431: dropped unread
        if self._reading_head:
            self._head_bytes_received += len(data)
        super().data_received(data)
        # Still inside the head after this read: every byte of it was head (a head that ended in
        # this read, body bytes after it included, is judged by the exact per-field count instead).
        if self._reading_head and self._head_bytes_received > self.max_header_bytes:
            self._refuse_head(f"request head larger than {self.max_header_bytes} bytes (--max-header-bytes)")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_fields = self._head_field_bytes = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._count_head_bytes(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_fields += 1
        if self._head_fields > self.max_header_fields:
            self._head_refusal = f"more than {self.max_header_fields} header fields (--max-header-fields)"
            raise HeadTooLarge(self._head_refusal)
        self._count_head_bytes(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count_head_bytes(self, n: int) -> None:
        self._head_field_bytes += n
        if self._head_field_bytes > self.max_header_bytes:
            self._head_refusal = f"request head larger than {self.max_header_bytes} bytes (--max-header-bytes)"
            raise HeadTooLarge(self._head_refusal)

    def on_headers_complete(self) -> None:
        self._disarm()
        self._reading_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading_head, self._head_bytes_received = True, 0  # what follows is the next request's head

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a parser error: 431 instead where a head limit stopped the parser."""
        if self._head_refusal is None:
            return super().send_400_response(msg)
        self._refuse_head(self._head_refusal)

    def _refuse_head(self, why: str) -> None:
        if self._refused or self.transport.is_closing():
            return
        self._refused = True
        status = HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
        body = json.dumps(error_body(status, f"request headers too large: {why}")).encode()
        head = [f"HTTP/1.1 {status.value} {status.phrase}\r\n".encode()]
        for name, value in self.server_state.default_headers:
            head.append(name + b": " + value + b"\r\n")
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body))
        self.transport.write(b"".join(head) + body)
        self._disarm()
        if self.transport.can_write_eof():
            self.transport.write_eof()  # the client reads the 431, then end of stream
            self._linger = self.loop.call_later(LINGER_S, self.transport.close)
        else:  # pragma: no cover - TLS: no half-close
            self.transport.close()
        logger.warning("431 to %s: %s", self.client, why)
