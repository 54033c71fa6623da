"""sambay-serve's event loop: uvloop's, noting a stop signal before vLLM's handler for it runs.

On SIGTERM/SIGINT vLLM shuts the engine down and only then stops the HTTP server; from the engine
client alone that looks exactly like an engine that died (``errored``). The loop is where vLLM
registers its handler (``loop.add_signal_handler``), so the loop is where sambay-serve learns that
a stop was asked for — without replacing vLLM's handler or touching its objects.
"""

from __future__ import annotations

import signal

import uvloop

from .policies import engine_state

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopNotingLoop(uvloop.Loop):
    def add_signal_handler(self, sig, callback, *args):
        if sig in STOP_SIGNALS:
            original = callback

            def callback(*handler_args):
                engine_state.LIVENESS.note_stop_requested()
                return original(*handler_args)

        return super().add_signal_handler(sig, callback, *args)
