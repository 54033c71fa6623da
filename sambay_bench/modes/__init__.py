"""Every ``sambay-bench`` mode, in the order they run and report. A new mode is a module beside
these (a ``Mode``: flags, runner, point schema, report section) and one entry in this tuple."""

from __future__ import annotations

from ..mode import Mode
from . import decode, genlen, serve, ttft

MODES: dict[str, Mode] = {m.name: m for m in (serve.MODE, decode.MODE, genlen.MODE, ttft.MODE)}
