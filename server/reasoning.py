"""Split ``<think>...</think>`` reasoning from the answer, whole or as a stream of deltas."""

from __future__ import annotations

OPEN, CLOSE = "<think>", "</think>"


def split(text: str) -> tuple[str | None, str]:
    """(reasoning, content) of a finished text: reasoning is what a leading ``<think>`` opens,
    up to ``</think>`` (or the end, if the model never closed it)."""
    stripped = text.lstrip()
    if not stripped.startswith(OPEN):
        return None, text
    reasoning, _, content = stripped[len(OPEN):].partition(CLOSE)
    return reasoning, content


class StreamSplitter:
    """Feeds text deltas, returns (reasoning_delta, content_delta); holds back a possible
    partial tag at the end of a delta until the next one decides it."""

    def __init__(self) -> None:
        self.state = "start"  # start -> reasoning -> content
        self.buf = ""

    def feed(self, delta: str, final: bool = False) -> tuple[str, str]:
        self.buf += delta
        reasoning, content = "", ""
        while True:
            if self.state == "start":
                stripped = self.buf.lstrip()
                if stripped.startswith(OPEN):
                    self.buf, self.state = stripped[len(OPEN):], "reasoning"
                    continue
                if not final and OPEN.startswith(stripped):
                    return reasoning, content  # may still become <think>
                self.state = "content"
                continue
            if self.state == "reasoning":
                if CLOSE in self.buf:
                    head, _, self.buf = self.buf.partition(CLOSE)
                    reasoning += head
                    self.state = "content"
                    continue
                keep = 0 if final else _partial_suffix(self.buf, CLOSE)
                reasoning += self.buf[: len(self.buf) - keep]
                self.buf = self.buf[len(self.buf) - keep:]
                return reasoning, content
            content += self.buf
            self.buf = ""
            return reasoning, content


def _partial_suffix(text: str, tag: str) -> int:
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0
