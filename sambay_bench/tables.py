"""Markdown tables of SambaY beside the dense baseline, the pieces every mode's report section uses."""

from __future__ import annotations

import math
from typing import Any

LABEL = {"sambay": "SambaY", "dense": "Phi-4-mini (dense)"}


def num(v: Any, fmt: str = ".2f") -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)


def ratio(a: Any, b: Any) -> float | None:
    return a / b if a and b else None


def times(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}x"


def markdown_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def points(doc: dict[str, Any], mode: str) -> list[dict[str, Any]]:
    return doc.get("modes", {}).get(mode, {}).get("points", [])


def pair_table(doc: dict[str, Any], mode: str, key: str, value: str, head: list[str], fmt: str) -> str:
    """One row per ``key``: SambaY's and the dense model's ``value`` and dense / SambaY."""
    pts = points(doc, mode)
    by = {(p["model"], p[key]): p for p in pts}
    rows = []
    for k in sorted({p[key] for p in pts}):
        s, d = by.get(("sambay", k), {}).get(value), by.get(("dense", k), {}).get(value)
        rows.append([str(k), num(s, fmt), num(d, fmt), times(ratio(d, s))])
    return markdown_table(head, rows)
