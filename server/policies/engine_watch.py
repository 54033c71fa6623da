"""Notice promptly that the engine died, stop serving, and make the process exit non-zero.

vLLM's own watchdog stops the HTTP server within 5 s of engine death, and the process then exits 0,
so nothing restarts it. This policy polls twice a second from the lifespan, stops the server at once,
and (under the CLI) ends the process ``--exit-on-engine-death-s`` later whatever is still open;
``sambay-serve`` exits with :data:`~.engine_state.ENGINE_DEAD_EXIT_CODE` when it happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from . import engine_state
from .asgi import Receive, Scope, Send
from .policy import Policy
from .settings import Option

log = logging.getLogger("sambay_server")
POLL_S = 0.5


class EngineWatch(Policy):
    options = (
        Option(
            "exit_on_engine_death_s",
            5.0,
            "after the engine dies, the process exits non-zero at the latest this much later",
            type=float,
        ),
    )

    def __init__(self, app, settings) -> None:
        super().__init__(app, settings)
        self.task: asyncio.Task | None = None

    async def lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def watched_receive():
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.task = asyncio.ensure_future(self._watch(scope))
            elif message["type"] == "lifespan.shutdown":
                # vLLM's error handler stops the server the moment a request meets the dead engine,
                # which can be before the next poll: judge once more on the way out.
                engine_state.LIVENESS.judge(engine_state.engine_of(scope))
                if self.task is not None:
                    self.task.cancel()
            return message

        await self.app(scope, watched_receive, send)

    async def _watch(self, scope: Scope) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            while not engine_state.LIVENESS.judge(engine_state.engine_of(scope)):
                await asyncio.sleep(POLL_S)
            self.on_death(scope)

    def on_death(self, scope: Scope) -> None:
        engine = engine_state.engine_of(scope)
        log.error("engine died (%r); stopping the server", getattr(engine, "dead_error", None))
        server = getattr(getattr(scope.get("app"), "state", None), "server", None)
        if server is not None:
            server.should_exit = True
        deadline = self.settings.exit_on_engine_death_s
        if deadline is not None:  # None: whoever embeds the app restarts it (Ray)
            asyncio.get_running_loop().call_later(deadline, os._exit, engine_state.ENGINE_DEAD_EXIT_CODE)
