"""The bearer key on every route but ``/health`` and ``/metrics``.

The check itself is vLLM's (``AuthenticationMiddleware.verify_token``: case-insensitive ``Bearer``,
SHA-256 digests compared in constant time, any of several keys). What differs is where it applies:
vLLM guards only paths under ``/v1``, ``/v2``, ``/inference`` and ``/cohere``, leaving ``/tokenize``,
``/invocations`` and the admin routes open; here every route is guarded but the probe (shallow
``/health``), the scraper (``/metrics``) and CORS preflights (``OPTIONS``). ``/tokenize`` and
``/detokenize`` stay guarded on purpose: they run the tokenizer in vLLM's renderer pool, which every
generation request waits on, and are not admitted, so open they would let anyone who reaches the
port queue that pool (``vllm bench serve``, whose alignment probe sends no key, then skips it). The refusal is an
OpenAI error body with ``WWW-Authenticate: Bearer``. A request that passes is tagged with a digest
prefix of its key (:attr:`Exchange.api_key_id`), for policies that act per key.
"""

from __future__ import annotations

import hashlib

from starlette.datastructures import Headers

from .. import vllm_front
from . import routes
from .asgi import Receive, Scope, Send, exchange, send_error
from .policy import Policy
from .settings import Option

UNAUTHORIZED = "missing or invalid API key (Authorization: Bearer ...)"
POLICY_VIOLATION = 1008  # websocket close code


def key_id(authorization: str) -> str:
    """A short, non-secret name for the key in an ``Authorization`` header (SHA-256 prefix)."""
    _, _, token = authorization.partition(" ")
    return hashlib.sha256(token.encode("utf-8")).hexdigest()[:16]


class ApiKeyAuth(Policy):
    options = (
        Option(
            "api_keys",
            (),
            "accepted API keys (vLLM's --api-key, several allowed, or SAMBAY_API_KEY / VLLM_API_KEY)",
            flag=None,
            arg="sambay_api_keys",
        ),
    )

    def __init__(self, app, settings) -> None:
        super().__init__(app, settings)
        # vLLM's middleware object is used for its check only; requests never pass through it.
        self.vllm_auth = vllm_front.authentication_middleware()(app, tokens=list(settings.api_keys))

    @classmethod
    def enabled(cls, settings) -> bool:
        return bool(settings.api_keys)

    def _authorized(self, scope: Scope) -> bool:
        if scope.get("method") == "OPTIONS" or routes.is_open(scope):
            return True
        headers = Headers(scope=scope)
        if not self.vllm_auth.verify_token(headers):
            return False
        exchange(scope).api_key_id = key_id(headers["authorization"])
        return True

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._authorized(scope):
            return await send_error(send, 401, UNAUTHORIZED, headers=[(b"www-authenticate", b"Bearer")])
        await self.app(scope, receive, send)

    async def websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._authorized(scope):
            return await send({"type": "websocket.close", "code": POLICY_VIOLATION})
        await self.app(scope, receive, send)
