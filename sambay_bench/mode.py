"""What a ``sambay-bench`` mode is: its flags, where it runs, what it records and how it reports.

The registry is ``sambay_bench.modes.MODES``. The command line, the settings, the offline worker,
the server runs, the JSON schema and the report are all built from it, so a new mode is one module
in ``sambay_bench/modes/`` and one entry in the registry.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OFFLINE = "offline"  # in the per-model engine worker (``sambay_bench.offline``), timed engine steps
SERVER = "server"  # against the model's OpenAI server, which the bench starts once per model


def int_list(text: str) -> list[int]:
    """An option type: comma-separated positive integers."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


@dataclass(frozen=True)
class Option:
    """One ``sambay-bench run`` flag. ``name`` is its key in the settings (and in bench.json);
    ``full`` and ``tiny`` are its defaults for ``--size`` (None: not set unless given)."""

    name: str
    type: Callable[[str], Any]
    help: str | None = None
    full: Any = None
    tiny: Any = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def default(self, size: str) -> Any:
        return {"full": self.full, "tiny": self.tiny}[size]


@dataclass
class ServerRun:
    """What a server mode is handed: the settings, one model's server (already up) and the run's
    records. ``results`` is the run's ``Results``; ``log.say`` writes a line to bench.log and the
    terminal."""

    settings: dict[str, Any]
    model: str
    vocab_size: int
    base_url: str
    out: Path
    results: Any
    log: Any


def _nothing(settings: dict[str, Any]) -> dict[str, Any]:
    return {}


def _accept(settings: dict[str, Any]) -> None:
    return None


@dataclass(frozen=True)
class Mode:
    """One benchmark mode.

    ``run``: for an offline mode ``run(ctx: driver.OfflineRun, max_model_len, budget_s, **params(s))``
    in the engine worker, reporting through ``driver.emit``; for a server mode ``run(ctx: ServerRun)``
    in the bench process. ``brief`` is one log line for a point, ``table`` the mode's report section
    (markdown) from the whole bench.json, ``plot(doc, path, title)`` draws its PNG at ``path``
    (``<name>.png``) and returns it (None: nothing to draw), ``point_schema`` is the JSON schema of
    one point. ``engine_args`` are engine arguments an offline mode needs unless the user set
    them; ``check`` refuses inconsistent settings with ``SystemExit``."""

    name: str
    title: str
    runs_in: str
    options: tuple[Option, ...]
    run: Callable[..., None]
    point_schema: dict[str, Any]
    brief: Callable[[dict[str, Any]], str]
    table: Callable[[dict[str, Any]], str]
    plot: Callable[[dict[str, Any], Path, str], Path | None] | None = None
    params: Callable[[dict[str, Any]], dict[str, Any]] = _nothing
    engine_args: Callable[[dict[str, Any]], dict[str, Any]] = _nothing
    check: Callable[[dict[str, Any]], None] = _accept
    section_properties: dict[str, Any] = field(default_factory=dict)  # more keys of the mode's section

    def __post_init__(self) -> None:
        if self.runs_in not in (OFFLINE, SERVER):
            raise ValueError(f"mode {self.name}: runs_in is {OFFLINE!r} or {SERVER!r}, not {self.runs_in!r}")

    def schema(self) -> dict[str, Any]:
        """The JSON schema of ``bench.json``'s ``modes.<name>``."""
        return {
            "$ref": "#/$defs/mode",
            "properties": {"points": {"items": self.point_schema}, **self.section_properties},
            "required": sorted(self.section_properties),
        }
