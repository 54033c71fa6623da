"""Every request gets one id: the client's ``X-Request-Id`` if it is sane, else a fresh one.

vLLM names its engine request after the request's ``X-Request-Id`` header and, with
``--enable-request-id-headers``, echoes it on the response through its own middleware — which this
policy runs (sambay-serve turns the flag on by default and takes it over, so that the echo sits here,
outside the other policies, and their own answers — 401, 429, 413, … — carry the id too). What vLLM
lacks, and this adds: an id that is missing or not a short token (control characters, 10 kB of
text) is replaced by a fresh one *in the request*, so the engine log, the response header and the
access log all show the same id.
"""

from __future__ import annotations

import re
import uuid

from .. import vllm_front
from .asgi import Receive, Scope, Send, exchange
from .policy import Policy
from .settings import Option

SANE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class RequestId(Policy):
    options = (
        Option(
            "request_id_headers",
            False,
            "X-Request-Id on every response (vLLM's --enable-request-id-headers; sambay-serve: on)",
            flag=None,
            arg="sambay_request_id_headers",
        ),
    )

    def __init__(self, app, settings) -> None:
        super().__init__(app, settings)
        self.next = vllm_front.request_id_middleware()(app) if settings.request_id_headers else app

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        given = b""
        kept = []
        for name, value in scope.get("headers") or []:
            if name.lower() == b"x-request-id":
                given = value
            else:
                kept.append((name, value))
        text = given.decode("latin-1")
        request_id = text if SANE_ID.match(text) else f"req-{uuid.uuid4().hex[:16]}"
        scope["headers"] = [*kept, (b"x-request-id", request_id.encode())]
        exchange(scope).request_id = request_id
        await self.next(scope, receive, send)
