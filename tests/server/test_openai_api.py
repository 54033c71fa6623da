"""The official openai SDK against sambay-serve: chat and completions, streaming and not."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.engine
MODEL = "sambay-tiny"


def test_models(client):
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_chat_non_streaming_usage_reasoning_fields_logprobs(client):
    r = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What is 2+3?"}],
        max_tokens=8,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
        seed=1,
    )
    choice = r.choices[0]
    assert r.usage.completion_tokens == len(choice.logprobs.content) >= 1
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.usage.completion_tokens_details.reasoning_tokens == 0
    extra = choice.message.model_extra
    assert "reasoning" in extra and "reasoning_content" in extra
    assert all(len(t.top_logprobs) == 3 for t in choice.logprobs.content)
    assert all(t.logprob <= 0 for t in choice.logprobs.content)
    assert choice.finish_reason in ("stop", "length")


def test_chat_streaming_matches_non_streaming(client):
    kwargs = dict(model=MODEL, messages=[{"role": "user", "content": "Tell me a story."}], max_tokens=12, temperature=0)
    full = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == full.choices[0].finish_reason


def test_completions_n_stop_seed_and_logprobs(client):
    r = client.completions.create(
        model=MODEL, prompt="The river ran", max_tokens=10, n=2, temperature=0.8, seed=7, logprobs=2
    )
    assert len(r.choices) == 2 and {c.index for c in r.choices} == {0, 1}
    assert all(len(c.logprobs.token_logprobs) == len(c.logprobs.tokens) for c in r.choices)
    again = client.completions.create(
        model=MODEL, prompt="The river ran", max_tokens=10, n=2, temperature=0.8, seed=7, logprobs=2
    )
    assert [c.text for c in again.choices] == [c.text for c in r.choices]  # seeded sampling is reproducible
    greedy = client.completions.create(model=MODEL, prompt="The river ran", max_tokens=10, temperature=0)
    first = greedy.choices[0].text
    if len(first.strip()) > 1:
        stop = first.strip()[:1]
        cut = client.completions.create(model=MODEL, prompt="The river ran", max_tokens=10, temperature=0, stop=[stop])
        assert stop not in cut.choices[0].text and cut.choices[0].finish_reason == "stop"


def test_benchmark_extensions_ignore_eos_and_min_tokens(client):
    r = client.completions.create(
        model=MODEL, prompt="Hi", max_tokens=40, temperature=0, extra_body={"ignore_eos": True, "min_tokens": 40}
    )
    assert r.usage.completion_tokens == 40
    r = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_completion_tokens=5, temperature=0
    )
    assert r.usage.completion_tokens <= 5


def test_completion_streaming(client):
    chunks = list(client.completions.create(model=MODEL, prompt="Once upon", max_tokens=6, temperature=0, stream=True))
    assert (
        "".join(c.choices[0].text for c in chunks)
        == client.completions.create(model=MODEL, prompt="Once upon", max_tokens=6, temperature=0).choices[0].text
    )


def test_stream_headers_forbid_buffering(server, auth):
    """Behind nginx-style proxies an SSE stream without these headers is buffered (TTFT lies)."""
    import httpx

    body = {"model": MODEL, "prompt": "Once upon", "max_tokens": 2, "stream": True}
    with httpx.stream("POST", f"{server['base']}/v1/completions", json=body, headers=auth, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-cache"
        assert r.headers["x-accel-buffering"] == "no"
        r.read()
