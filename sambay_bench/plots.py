"""Matplotlib pieces every mode's PNG uses (imported only when a plot is drawn)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .tables import LABEL, points

COLOR = {"sambay": "tab:blue", "dense": "tab:orange"}


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def models_of(pts: list[dict[str, Any]]) -> list[str]:
    return [m for m in LABEL if any(p["model"] == m for p in pts)]


def integer_ticks(axis, values: list[int]) -> None:
    from matplotlib.ticker import FixedLocator, NullLocator

    axis.set_major_locator(FixedLocator(values))
    axis.set_minor_locator(NullLocator())
    axis.set_ticklabels([str(v) for v in values])


def plain_log_labels(axis) -> None:
    from matplotlib.ticker import LogFormatter

    axis.set_major_formatter(LogFormatter(labelOnlyBase=False))
    axis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def save(fig, path: Path) -> Path:
    plt = pyplot()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def pair_plot(doc: dict[str, Any], path: Path, title: str, mode: str, key: str, value: str, xlabel: str, ylabel: str):
    """``value`` against ``key`` for both models; None when the mode has no points."""
    pts = points(doc, mode)
    if not pts:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for m in models_of(pts):
        mp = sorted((p for p in pts if p["model"] == m), key=lambda p: p[key])
        ax.plot([p[key] for p in mp], [p[value] for p in mp], "o-", color=COLOR[m], label=LABEL[m])
    ax.set(xlabel=xlabel, ylabel=ylabel, title=f"{ylabel.split(' ')[0]} at C = 1, {title}")
    ax.grid(alpha=0.3)
    ax.legend()
    return save(fig, path)
