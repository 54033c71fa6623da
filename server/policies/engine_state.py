"""Has the engine died? The one place that decides it.

vLLM's engine client reports ``errored`` both when its engine core died and after a deliberate
``shutdown()`` (SIGTERM: vLLM drains, then shuts the engine down, then stops the HTTP server), and
nothing public on the client tells the two apart. What does tell them apart is whether a stop was
asked for: sambay-serve's event loop (:mod:`sambay_server.event_loop`) notes SIGTERM/SIGINT before
vLLM's own handler runs, and embedders that stop the engine themselves (the Ray replica) say so with
:meth:`EngineLiveness.note_stop_requested`. An engine that errors with no stop asked for has died.
"""

from __future__ import annotations

from typing import Any

# The status sambay-serve exits with when the engine died (orchestrators restart the process).
ENGINE_DEAD_EXIT_CODE = 3


class EngineLiveness:
    """The verdict for this process's engine. Once dead, always dead."""

    def __init__(self) -> None:
        self.stop_requested = False
        self.dead = False

    def note_stop_requested(self) -> None:
        """A deliberate stop began: an ``errored`` engine from now on is a stopped one, not a dead one."""
        self.stop_requested = True

    def judge(self, engine: Any) -> bool:
        """Whether the engine has died (errored without a stop being asked for)."""
        if not self.dead and engine is not None and not self.stop_requested and bool(getattr(engine, "errored", False)):
            self.dead = True
        return self.dead


# One engine per process (sambay-serve, a Ray replica): one verdict. Looked up at call time, so
# tests can put a fresh one in its place.
LIVENESS = EngineLiveness()


def engine_of(scope: dict) -> Any:
    """The vLLM engine client of the app serving ``scope`` (None outside a vLLM app)."""
    return getattr(getattr(scope.get("app"), "state", None), "engine_client", None)
