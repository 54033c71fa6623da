"""Reading an OpenAI-style SSE stream into the latencies of one request.

Fed one line at a time with the time it arrived, so scripted timings can test it without a
network and the Locust user only has to move bytes. Definitions follow vLLM's benchmark client:
TTFT is the first delta that carries output of any kind, reasoning included. Taking it from the
first ``content`` delta instead measures time to the first *answer* token of a reasoning model,
which is LLMPerf's mistake; that number is kept separately as ``tfat_ms``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

# Delta fields that count as generated output (vLLM's bench client counts the same ones).
OUTPUT_FIELDS = ("content", "reasoning", "reasoning_content", "tool_calls")


@dataclass
class RequestResult:
    """One request, in milliseconds. ``error`` is short and stable (it is Locust's failure key);
    ``detail`` keeps what the server said."""

    status: int  # HTTP status; 0 when no response arrived
    error: str | None = None
    detail: str | None = None
    ttft_ms: float | None = None  # first output of any kind
    tfat_ms: float | None = None  # first answer (``content``) token, i.e. after the reasoning
    e2e_ms: float | None = None  # last output chunk; trailing finish/usage chunks do not count
    total_ms: float = 0.0  # until the response ended, whatever it carried
    itl_ms: list[float] = field(default_factory=list)  # gaps between consecutive output chunks
    tpot_ms: float | None = None  # (e2e - ttft) / (output_tokens - 1)
    output_tokens: int | None = None  # from the server's usage, never from counting chunks
    prompt_tokens: int | None = None
    reasoning_tokens: int | None = None
    chunks: int = 0  # output chunks seen (one token each on vLLM, but not guaranteed)

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class StreamReader:
    """Accumulates SSE lines of one response. Times are seconds on one monotonic clock, the
    same one that stamped ``start`` just before the request was sent."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.first: float | None = None
        self.first_answer: float | None = None
        self.last: float | None = None
        self.itl: list[float] = []
        self.chunks = 0
        self.usage: dict | None = None
        self.done = False
        self.error: str | None = None
        self.detail: str | None = None
        self._data: list[str] = []
        self._data_time = 0.0

    def feed(self, line: bytes | str, now: float) -> None:
        """One line of the body, with or without its line ending."""
        if isinstance(line, bytes):
            line = line.decode("utf-8", errors="replace")
        line = line.rstrip("\r\n")
        if not line:  # a blank line ends an event
            self._dispatch()
        elif line.startswith(":"):  # comment, e.g. keep-alive pings
            pass
        elif line.startswith("data:"):
            value = line[5:]
            if not self._data:
                self._data_time = now
            self._data.append(value[1:] if value.startswith(" ") else value)
        # other fields (event:, id:, retry:) carry nothing an OpenAI stream needs

    def _dispatch(self) -> None:
        if not self._data:
            return
        data, t = "\n".join(self._data), self._data_time
        self._data = []
        if data == "[DONE]":
            self.done = True
            return
        try:
            payload = json.loads(data)
        except ValueError:
            self.fail("malformed SSE data", data[:200])
            return
        if not isinstance(payload, dict):
            self.fail("malformed SSE data", data[:200])
            return
        if payload.get("error") is not None:
            err = payload["error"]
            message = err.get("message") if isinstance(err, dict) else str(err)
            kind = err.get("type") if isinstance(err, dict) else None
            self.fail(f"stream error: {kind or 'error'}", message)
            return
        if payload.get("usage"):
            self.usage = payload["usage"]  # the last one wins (continuous usage stats send many)
        output = answer = False
        for choice in payload.get("choices") or ():
            delta = choice.get("delta") or {}
            text = delta.get("content") or choice.get("text")  # chat delta, or a completions choice
            answer = answer or bool(text)
            output = output or bool(text) or any(delta.get(k) for k in OUTPUT_FIELDS)
        if output:
            if self.first is None:
                self.first = t
            else:
                self.itl.append(t - self.last)
            self.last = t
            self.chunks += 1
        if answer and self.first_answer is None:
            self.first_answer = t

    def fail(self, error: str, detail: str | None) -> None:
        """Keep the first error: what follows it is usually its consequence."""
        if self.error is None:
            self.error, self.detail = error, detail

    def finish(self, now: float) -> RequestResult:
        """The result once the body has ended (or broke off) at ``now``."""
        self._dispatch()  # a last event without its blank line
        if not self.done and self.error is None:
            self.fail("stream ended without [DONE]", None)
        usage = self.usage or {}
        out = _int_or_none(usage.get("completion_tokens"))
        details = usage.get("completion_tokens_details") or {}
        ttft = _ms(self.first, self.start)
        e2e = _ms(self.last, self.start)
        tpot = None
        if out is not None and out > 1 and ttft is not None and e2e is not None:
            tpot = (e2e - ttft) / (out - 1)
        return RequestResult(
            status=200,
            error=self.error,
            detail=self.detail,
            ttft_ms=ttft,
            tfat_ms=_ms(self.first_answer, self.start),
            e2e_ms=e2e,
            total_ms=(now - self.start) * 1e3,
            itl_ms=[round(g * 1e3, 3) for g in self.itl],
            tpot_ms=tpot,
            output_tokens=out,
            prompt_tokens=_int_or_none(usage.get("prompt_tokens")),
            reasoning_tokens=_int_or_none(details.get("reasoning_tokens")) if isinstance(details, dict) else None,
            chunks=self.chunks,
        )


def http_error(status: int, body: bytes, elapsed_s: float) -> RequestResult:
    """A non-200 answer: the error key is the status code (plus the OpenAI error type when the
    body has one), so Locust groups failures by status."""
    detail, kind = body[:500].decode("utf-8", errors="replace") or None, None
    try:
        parsed = json.loads(body)
        err = parsed.get("error", parsed) if isinstance(parsed, dict) else {}
        if isinstance(err, dict):  # OpenAI {"error": {...}} or vLLM's older flat {"object": "error", ...}
            detail, kind = err.get("message") or detail, err.get("type")
        elif isinstance(err, str):
            detail = err
    except ValueError:
        pass
    key = f"HTTP {status}" + (f" {kind}" if kind else "")
    return RequestResult(status=status, error=key, detail=detail, total_ms=elapsed_s * 1e3)


def _ms(t: float | None, start: float) -> float | None:
    return None if t is None else (t - start) * 1e3


def _int_or_none(v: Any) -> int | None:
    return int(v) if isinstance(v, int | float) and not isinstance(v, bool) else None
