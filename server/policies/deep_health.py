"""``GET /health?deep=true``: generate one token, so a probe learns the engine can still generate.

vLLM's ``/health`` only asks the engine client whether it has errored. The deep check needs the key
and counts in admission (see :mod:`.routes`), and concurrent deep checks share one generation, so
the endpoint cannot be used to multiply engine load.
"""

from __future__ import annotations

import asyncio
import uuid

from . import engine_state, routes
from .asgi import Receive, Scope, Send, send_error, send_json
from .policy import Policy

TIMEOUT_S = 60


async def one_token(engine) -> None:
    from vllm import SamplingParams, TokensPrompt

    await engine.check_health()
    params = SamplingParams(max_tokens=1, temperature=0.0)
    async for _ in engine.generate(TokensPrompt(prompt_token_ids=[0]), params, f"health-{uuid.uuid4().hex}"):
        pass


class DeepHealth(Policy):
    def __init__(self, app, settings) -> None:
        super().__init__(app, settings)
        self.running: asyncio.Future | None = None

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not routes.is_deep_health(scope):
            return await self.app(scope, receive, send)
        if self.running is None or self.running.done():
            self.running = asyncio.ensure_future(one_token(engine_state.engine_of(scope)))
        try:
            await asyncio.wait_for(asyncio.shield(self.running), timeout=TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy"
            return await send_error(send, 503, f"engine unhealthy: {type(exc).__name__}")
        await send_json(send, 200, {"status": "ok"})
