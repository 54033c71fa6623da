"""Request bodies: presets, jitter, prompts that no two requests share."""

from __future__ import annotations

import json
import random

import pytest

from sambay_client.workload import PRESETS, RequestFactory, draw_length, resolve, word_salad


def test_paper_preset_and_explicit_values_win():
    wl = resolve("paper")
    # One paper shape for the bench and the load tests (benchmark.md section 7).
    assert (wl.prompt_tokens, wl.output_tokens, wl.ignore_eos) == (2000, 32000, True)
    assert wl.prompt_jitter == wl.output_jitter == 0.3
    assert (wl.temperature, wl.top_p) == (1.0, 0.9)
    assert resolve("paper", output_tokens=1024, ignore_eos=False).output_tokens == 1024
    assert resolve("paper", ignore_eos=False).ignore_eos is False
    assert resolve(None, prompt_tokens=None).prompt_tokens == 512  # None means "not given"
    with pytest.raises(ValueError):
        resolve("nope")
    assert set(PRESETS) >= {"paper"}


def test_jitter_is_gaussian_with_the_given_relative_std():
    rng = random.Random(1)
    draws = [draw_length(1000, 0.3, rng) for _ in range(4000)]
    mean = sum(draws) / len(draws)
    std = (sum((d - mean) ** 2 for d in draws) / len(draws)) ** 0.5
    assert abs(mean - 1000) < 20 and abs(std - 300) < 20
    assert min(draws) >= 1
    assert draw_length(1000, 0.0, rng) == 1000


def test_generated_prompts_are_unique_from_the_start_and_about_n_words():
    rng = random.Random(0)
    a, b = word_salad(64, rng), word_salad(64, rng)
    assert len(a.split()) == 64
    assert a.split()[:2] != b.split()[:2]  # the tag: prefix caching gets nothing to reuse


def test_body_fields():
    rng = random.Random(0)
    body = RequestFactory(resolve("smoke", temperature=0.5, extra_body={"top_p": 0.9}), "m").body(rng)
    assert body["model"] == "m" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 16 and body["ignore_eos"] is True
    assert body["temperature"] == 0.5 and body["top_p"] == 0.9
    assert "ignore_eos" not in RequestFactory(resolve(None), "m").body(rng)  # strict servers reject it


def test_prompts_file(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(
        json.dumps({"prompt": "Hello?"})
        + "\n\n"
        + json.dumps({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 7})
        + "\n"
    )
    factory = RequestFactory(resolve(None, prompts_file=str(path), output_tokens=99), "m")
    rng = random.Random(0)
    seen = {json.dumps(b["messages"]): b["max_tokens"] for b in (factory.body(rng) for _ in range(50))}
    assert seen == {
        json.dumps([{"role": "user", "content": "Hello?"}]): 99,
        json.dumps([{"role": "user", "content": "Hi"}]): 7,
    }
