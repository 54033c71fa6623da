"""SSE parsing and per-request latency math, on scripted lines with exact timestamps."""

from __future__ import annotations

import json

import pytest

from sambay_client.sse import StreamReader, http_error


def data(delta: dict | None = None, usage: dict | None = None, finish: str | None = None, **top) -> str:
    payload = {"choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}], **top}
    if usage is not None:
        payload["usage"] = usage
    return "data: " + json.dumps(payload)


def feed(events: list[tuple[float, str]], start: float = 10.0, end: float | None = None):
    """Each event is sent as its line(s) plus the blank line that ends it, at start + t."""
    reader = StreamReader(start)
    for t, text in events:
        for line in text.split("\n"):
            reader.feed(line + "\n", start + t)
        reader.feed(b"\r\n", start + t)
    return reader.finish(start + (end if end is not None else events[-1][0]))


USAGE = {
    "prompt_tokens": 7,
    "completion_tokens": 11,
    "total_tokens": 18,
    "completion_tokens_details": {"reasoning_tokens": 5},
}
REASONING_THEN_ANSWER = [
    (0.010, data({"role": "assistant", "content": ""})),  # the role chunk: empty content is not output
    (0.020, ": ping"),
    (0.100, data({"reasoning": "Hmm", "reasoning_content": "Hmm"})),
    (0.150, data({"reasoning_content": " so"})),  # the legacy field alone counts too
    (0.400, data({"content": "Four"})),
    (0.450, data({"content": "."})),
    (0.900, data({}, finish="stop")),  # no output: must not move e2e
    (1.000, data(usage=USAGE)),
    (1.000, "data: [DONE]"),
]


def test_ttft_counts_reasoning_and_first_answer_is_separate():
    r = feed(REASONING_THEN_ANSWER)
    assert r.ok, r
    # A reader that looked only at `content` (LLMPerf) would report 400 ms here.
    assert r.ttft_ms == pytest.approx(100)
    assert r.tfat_ms == pytest.approx(400)
    assert r.e2e_ms == pytest.approx(450)
    assert r.total_ms == pytest.approx(1000)
    assert r.itl_ms == pytest.approx([50, 250, 50])
    assert r.chunks == 4


def test_token_counts_come_from_usage_not_chunks():
    r = feed(REASONING_THEN_ANSWER)
    assert (r.output_tokens, r.prompt_tokens, r.reasoning_tokens) == (11, 7, 5)
    assert r.tpot_ms == pytest.approx((450 - 100) / (11 - 1))  # 4 chunks would give 116.7


def test_without_usage_there_is_no_token_count_or_tpot():
    r = feed([(0.1, data({"content": "a"})), (0.2, data({"content": "b"})), (0.2, "data: [DONE]")])
    assert r.ok and r.chunks == 2
    assert r.output_tokens is None and r.tpot_ms is None


def test_event_split_over_data_lines_and_field_without_space():
    payload = json.dumps({"choices": [{"index": 0, "delta": {"content": "x"}}]})
    cut = payload.index('"delta"')
    r = feed([(0.2, f"data: {payload[:cut]}\ndata:{payload[cut:]}"), (0.3, "event: done\ndata: [DONE]")])
    assert r.ok and r.chunks == 1 and r.ttft_ms == pytest.approx(200)


def test_completions_style_text_is_an_answer():
    r = feed([(0.05, 'data: {"choices": [{"index": 0, "text": "hi"}]}'), (0.05, "data: [DONE]")])
    assert r.ttft_ms == pytest.approx(50) and r.tfat_ms == pytest.approx(50)


def test_stream_without_done_is_a_failure():
    r = feed([(0.1, data({"content": "a"}))], end=0.3)
    assert not r.ok and r.error == "stream ended without [DONE]"
    assert r.ttft_ms == pytest.approx(100) and r.total_ms == pytest.approx(300)


def test_error_event_in_a_200_stream_is_a_failure():
    err = 'data: {"error": {"message": "engine died", "type": "internal_error", "code": 500}}'
    r = feed([(0.1, data({"content": "a"})), (0.2, err), (0.2, "data: [DONE]")])
    assert not r.ok and r.status == 200
    assert (r.error, r.detail) == ("stream error: internal_error", "engine died")


def test_garbage_data_is_a_failure():
    r = feed([(0.1, "data: {not json"), (0.1, "data: [DONE]")])
    assert r.error == "malformed SSE data"


@pytest.mark.parametrize(
    ("status", "body", "error", "detail"),
    [
        (
            429,
            b'{"error": {"message": "busy", "type": "rate_limit_error", "code": 429}}',
            "HTTP 429 rate_limit_error",
            "busy",
        ),
        (
            400,
            b'{"object": "error", "message": "too long", "type": "BadRequestError", "code": 400}',
            "HTTP 400 BadRequestError",
            "too long",
        ),
        (502, b"<html>Bad Gateway</html>", "HTTP 502", "<html>Bad Gateway</html>"),
        (503, b"", "HTTP 503", None),
    ],
)
def test_http_errors_are_keyed_by_status(status, body, error, detail):
    r = http_error(status, body, 0.25)
    assert (r.status, r.error, r.detail, r.total_ms) == (status, error, detail, 250)
    assert not r.ok
