"""The report of a run: one section (markdown table) and one PNG per mode in ``bench.json``, in the
registry's order, then what was skipped and what failed. Pure functions of the document, so
``sambay-bench report`` redraws a finished run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .modes import MODES


def render(doc: dict[str, Any], out: Path, plots: bool = True) -> str:
    """All tables as markdown; writes ``summary.md`` and (unless ``plots`` is off) the PNGs."""
    env = doc.get("environment") or {}
    parts = [
        f"# sambay-bench: {env.get('gpu') or env.get('device', '?')}, vLLM {env.get('vllm', '?')}, "
        f"torch {env.get('torch', '?')}",
        "`" + " ".join(doc.get("command", [])) + "`",
    ]
    modes = doc.get("modes", {})
    for name, mode in MODES.items():
        if name in modes:
            parts += [f"## {mode.title}", mode.table(doc)]
    skipped = [(m, s) for m, v in modes.items() for s in v.get("skipped", [])]
    if skipped:
        parts += [
            "## Skipped",
            "\n".join(
                f"- {m}: " + ", ".join(f"{k}={v}" for k, v in s.items() if k != "reason") + f": {s['reason']}"
                for m, s in skipped
            ),
        ]
    errors = [(m, e) for m, info in doc.get("models", {}).items() for e in info.get("errors", [])]
    if errors:
        parts += ["## Errors", "\n".join(f"- {m}: {e}" for m, e in errors)]
    if plots:
        written = plot_all(doc, out)
        parts += ["Plots: " + ", ".join(p.name for p in written)]
    text = "\n\n".join(parts) + "\n"
    (out / "summary.md").write_text(text)
    return text


def plot_all(doc: dict[str, Any], out: Path) -> list[Path]:
    """``<mode>.png`` for every mode with points."""
    env = doc.get("environment") or {}
    title = f"{env.get('gpu') or 'CPU'}, vLLM {env.get('vllm')}"
    written = []
    for name, mode in MODES.items():
        if mode.plot is not None:
            path = mode.plot(doc, out / f"{name}.png", title)
            if path is not None:
                written.append(path)
    return written
