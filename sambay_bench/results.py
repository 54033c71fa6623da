"""The benchmark's JSON document and the event lines its worker processes print.

The document is rewritten after every point, so a run cut short (a time limit, an OOM, a lost
machine) still leaves every number it measured. Worker processes report on stdout, one event per
line behind a fixed prefix; everything else they print is vLLM's log and goes to the raw log.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from sambay_client.jsonutil import json_safe

SCHEMA_VERSION = 1
EVENT_PREFIX = "@@sambay-bench "


def event_line(kind: str, **data: Any) -> str:
    return EVENT_PREFIX + json.dumps({"event": kind, **data}, default=str)


def parse_event(line: str) -> dict[str, Any] | None:
    if not line.startswith(EVENT_PREFIX):
        return None
    try:
        return json.loads(line[len(EVENT_PREFIX) :])
    except ValueError:
        return None


class Results:
    """``bench.json`` of one run: header, per-model facts, and per mode its points and skips."""

    def __init__(self, path: Path, settings: dict[str, Any]) -> None:
        self.path = path
        self.doc: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "tool": "sambay-bench",
            "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
            "started_at": _now(),
            "finished_at": None,
            "host": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
            "environment": {},
            "settings": settings,
            "models": {},
            "modes": {},
        }

    def mode(self, name: str) -> dict[str, Any]:
        return self.doc["modes"].setdefault(name, {"points": [], "skipped": []})

    def add_point(self, mode: str, point: dict[str, Any]) -> None:
        self.mode(mode)["points"].append(point)
        self.save()

    def add_skip(self, mode: str, skip: dict[str, Any]) -> None:
        self.mode(mode)["skipped"].append(skip)
        self.save()

    def save(self, finished: bool = False) -> None:
        if finished:
            self.doc["finished_at"] = _now()
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(json_safe(self.doc), indent=2) + "\n")
        tmp.replace(self.path)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
