"""Request bodies: presets, jitter, prompts that no two requests share, endpoint styles, and the
single-source property: Locust and sambay-bench build their requests from the one definition."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from loadtest import settings as locust_settings
from sambay_bench import cli
from sambay_bench.models import FULL_VOCAB, TINY_VOCAB
from sambay_bench.modes import serve
from sambay_client.workload import (
    CHAT,
    COMPLETIONS,
    PAPER,
    PRESETS,
    BenchmarkTokenPrompts,
    RequestFactory,
    Workload,
    draw_length,
    resolve,
    word_salad,
)

REPO = Path(__file__).resolve().parents[2]


def test_paper_preset_and_explicit_values_win():
    wl = resolve("paper")
    # One paper shape for the bench and the load tests (docs/benchmark-method.md).
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


def test_endpoint_styles_put_the_prompt_where_the_route_expects_it(tmp_path):
    rng = random.Random(0)
    chat = RequestFactory(resolve("smoke"), "m", CHAT).body(rng)
    completion = RequestFactory(resolve("smoke"), "m", COMPLETIONS).body(rng)
    assert chat["messages"][0]["role"] == "user" and "prompt" not in chat
    assert isinstance(completion["prompt"], str) and "messages" not in completion
    assert (CHAT.path, COMPLETIONS.path) == ("/v1/chat/completions", "/v1/completions")
    assert CHAT.models_path("/openai/v1/chat/completions") == "/openai/v1/models"
    assert COMPLETIONS.models_path("/v1/completions") == "/v1/models"
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "Hi"}]}) + "\n")
    with pytest.raises(ValueError, match="prompt 1: the completions endpoint needs a 'prompt'"):
        RequestFactory(resolve(None, prompts_file=str(path)), "m", COMPLETIONS)


def test_benchmark_token_prompts_are_exactly_as_long_as_drawn():
    prompts = BenchmarkTokenPrompts(TINY_VOCAB)
    rng = random.Random(3)
    ids = prompts.ids(200, rng)
    assert len(ids) == 200 and min(ids) >= 10 and max(ids) < TINY_VOCAB
    words = prompts.text(64, rng).split()
    assert len(words) == 64 and all(w[0] == "t" and 10 <= int(w[1:]) < TINY_VOCAB for w in words)
    req = RequestFactory(resolve("smoke"), "m", COMPLETIONS, prompts).draw(rng)
    assert req.prompt_tokens == 32 and len(req.body["prompt"].split()) == 32
    with pytest.raises(ValueError, match="leaves no prompt ids"):
        BenchmarkTokenPrompts(10)


def test_describe_is_the_preset_in_words():
    assert PAPER.describe() == "2000 → 32000 tokens, Gaussian std 30 %, ignore_eos, temperature 1.0, top_p 0.9"
    assert Workload(8, 4, prompt_jitter=0.25).describe() == "8 → 4 tokens, prompt Gaussian std 25 %"


def test_locust_and_the_bench_send_the_same_bodies_for_the_same_seed():
    """sambay-bench's serve mode with its defaults (the paper's method) and Locust with
    ``--workload paper --api completions --benchmark-vocab 200064`` build identical requests from
    the same random generator: both go through the one workload definition."""
    bench_settings = cli.resolve(cli.parser().parse_args(["run"]), has_gpu=True)
    bench = serve.request_factory(bench_settings, "sambay", FULL_VOCAB)
    opts = SimpleNamespace(workload="paper", api="completions", benchmark_vocab=FULL_VOCAB)
    locust = locust_settings.request_factory(locust_settings.load_settings(opts), "sambay")
    for seed in range(12):
        from_bench, from_locust = bench.draw(random.Random(seed)), locust.draw(random.Random(seed))
        assert from_bench == from_locust, seed
        # no draw was long enough for the bench's clipping to max_model_len to make a difference
        assert from_bench.prompt_tokens + from_bench.body["max_tokens"] < bench_settings["max_model_len"]
    body = bench.body(random.Random(0))
    assert (body["temperature"], body["top_p"], body["ignore_eos"], body["stream"]) == (1.0, 0.9, True, True)
    assert locust_settings.load_settings(opts).endpoint == "/v1/completions"


def test_locust_refuses_what_it_cannot_honour(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "Hi"}) + "\n")
    with pytest.raises(ValueError, match="--benchmark-vocab or --prompts-file, not both"):
        locust_settings.load_settings(SimpleNamespace(benchmark_vocab=512, prompts_file=str(path)))
    with pytest.raises(ValueError, match="--api 'embeddings'"):
        locust_settings.load_settings(SimpleNamespace(api="embeddings"))
    assert locust_settings.load_settings(SimpleNamespace()).endpoint == "/v1/chat/completions"


def test_help_and_readmes_show_the_presets_as_defined():
    """The Locust help is built from the presets; the READMEs write them out, so they are checked."""
    code = (
        "import loadtest.locustfile\nfrom locust.argument_parser import get_parser\nprint(get_parser().format_help())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    help_text = " ".join(out.stdout.split())
    docs = {name: " ".join((REPO / name).read_text().split()) for name in ("loadtest/README.md", "docs/benchmarks.md")}
    for name, wl in PRESETS.items():
        assert f"{name} = {wl.describe()}" in help_text, name
        assert f"`{name}` ({wl.describe()}" in docs["loadtest/README.md"], name
        assert f"| `{name}` | {wl.describe()} |" in docs["docs/benchmarks.md"], name


def test_locust_options_override_the_preset():
    s = locust_settings.load_settings(
        SimpleNamespace(workload="paper", top_p="0.5", temperature="0.2", output_tokens="64", ignore_eos="false")
    )  # strings, as the web UI sends them
    assert (s.workload.top_p, s.workload.temperature, s.workload.output_tokens) == (0.5, 0.2, 64)
    assert s.workload.ignore_eos is False and s.workload.prompt_tokens == PAPER.prompt_tokens
