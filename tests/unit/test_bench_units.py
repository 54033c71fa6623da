"""sambay-bench without an engine: roofline arithmetic, the two configs, the benchmark tokenizer,
the paper's length law, flag parsing and the JSON schema."""

from __future__ import annotations

import copy
import json
import math
import random
import sys

import jsonschema
import pytest

from sambay_bench import cli
from sambay_bench.closed_loop import ratios
from sambay_bench.mode import OFFLINE, Mode, Option, int_list
from sambay_bench.models import FULL_VOCAB, config_dict, sambay_config, write_model
from sambay_bench.modes import MODES, serve
from sambay_bench.report import render
from sambay_bench.results import json_safe
from sambay_bench.roofline import decode_bytes, hbm_tbps, roofline_ms
from sambay_bench.schema import schema, validate
from sambay_client.workload import PAPER, BenchmarkTokenPrompts, Workload, paper_requests
from vllm_sambay.config import LayerKind, Phi4FlashConfig

H100 = 3.35


def test_roofline_matches_the_design_numbers():
    """docs/benchmark-method.md, roofline: SambaY B=64 at 32K reads ~95 GB (28 ms on an H100), Phi-4-mini B=15
    at 32K ~72 GB (21.5 ms); 1.34 GB of global KV per SambaY sequence at 32K, 4.29 GB dense."""
    s, d = decode_bytes("sambay", "full"), decode_bytes("dense", "full")
    assert s.params == pytest.approx(3.85e9, rel=0.01) and d.params == pytest.approx(3.84e9, rel=0.01)
    assert s.kv_token_bytes == 5120 and (s.full_kv_reads, s.window_kv_reads, s.window) == (8, 8, 512)
    assert s.state_bytes == pytest.approx(1.75e6, rel=0.01)  # 9 Mamba layers x (3 x 5120 + 5120 x 16) x 2 B
    assert s.per_sequence(32768) == 8 * 32768 * 5120 + 8 * 512 * 5120 + 2 * s.state_bytes
    assert d.per_sequence(32768) == 32 * 32768 * 2 * 8 * 128 * 2
    assert roofline_ms(s.per_step(64, 32768), H100) == pytest.approx(28.4, abs=0.1)
    assert roofline_ms(d.per_step(15, 32768), H100) == pytest.approx(21.5, abs=0.1)
    # the sliding window caps what short layers read: past 512 tokens only the global layers grow
    assert s.per_sequence(4096) - s.per_sequence(2048) == 8 * 2048 * 5120


def test_bandwidth_table_prefers_the_specific_name():
    assert hbm_tbps("NVIDIA H100 80GB HBM3") == 3.35
    assert hbm_tbps("NVIDIA H200") == 4.8
    assert hbm_tbps("NVIDIA GH200 480GB") == 4.0  # contains "H200" too
    assert hbm_tbps("NVIDIA A100-SXM4-80GB") == 2.039
    assert hbm_tbps(None) is None and hbm_tbps("some CPU") is None
    assert roofline_ms(10**9, None) is None


def test_full_configs_are_the_published_ones(tmp_path):
    d = config_dict("dense", "full")
    assert (d["hidden_size"], d["num_hidden_layers"], d["num_attention_heads"], d["num_key_value_heads"]) == (
        3072,
        32,
        24,
        8,
    )
    assert len(d["rope_scaling"]["long_factor"]) == len(d["rope_scaling"]["short_factor"]) == 48  # rotary dim 96 / 2
    path = write_model(tmp_path, "sambay", "full")
    loaded = Phi4FlashConfig(**json.loads((path / "config.json").read_text()))
    assert loaded.layer_layout == sambay_config("full").layer_layout
    assert [s.kind for s in loaded.layer_layout].count(LayerKind.CROSS_ATTENTION) == 7
    with pytest.raises(ValueError, match="unknown model"):
        config_dict("llama", "full")


def test_benchmark_tokenizer_is_one_token_per_word(tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(write_model(tmp_path, "dense", "full"))
    assert len(tok) == FULL_VOCAB
    text = BenchmarkTokenPrompts(FULL_VOCAB).text(500, random.Random(1))
    ids = tok(text)["input_ids"]
    assert len(ids) == 500 and tok.decode(ids) == text
    assert tok.decode([FULL_VOCAB - 1, 12]) == f"t{FULL_VOCAB - 1} t12"


def test_lengths_follow_the_paper_law_and_fit_the_model():
    rng = random.Random(0)
    draws = [PAPER.lengths(rng, max_model_len=40000) for _ in range(4000)]
    prompts = [p for p, _ in draws]
    mean = sum(prompts) / len(prompts)
    std = math.sqrt(sum((p - mean) ** 2 for p in prompts) / len(prompts))
    assert mean == pytest.approx(2000, rel=0.03) and std == pytest.approx(600, rel=0.1)
    assert all(p >= 1 and o >= 1 and p + o <= 40000 for p, o in draws)
    assert any(p + o == 40000 for p, o in draws)  # long draws are clipped to fit, not dropped
    assert Workload(10, 20).lengths(rng, 100) == (10, 20)
    assert [paper_requests(c) for c in (1, 16)] == [36, 96]


def test_ratios_pair_the_two_models_per_level():
    pts = [
        {"model": "sambay", "concurrency": 4, "queries_per_s": 2.0, "output_tok_s": 100.0, "mean_latency_s": 2.0},
        {"model": "dense", "concurrency": 4, "queries_per_s": 0.5, "output_tok_s": 40.0, "mean_latency_s": 8.0},
        {"model": "sambay", "concurrency": 8, "queries_per_s": 3.0, "output_tok_s": 1.0, "mean_latency_s": 1.0},
    ]
    assert ratios(pts) == [
        {"concurrency": 4, "queries_per_s": 4.0, "output_tok_s": 2.5, "latency_dense_over_sambay": 4.0}
    ]


def test_flags(tmp_path):
    args = cli.parser().parse_args(
        [
            "run",
            "--engine-arg",
            "dense:num_gpu_blocks_override=20",
            "--engine-arg",
            "max-num-seqs=8",
            "--engine-arg",
            "kv_cache_dtype=fp8",
            "--engine-arg",
            'sambay:compilation_config={"cudagraph_capture_sizes": [1, 16]}',
        ]
    )
    assert args.engine_arg == [
        ("dense", "num_gpu_blocks_override", 20),
        (None, "max_num_seqs", 8),
        (None, "kv_cache_dtype", "fp8"),
        ("sambay", "compilation_config", {"cudagraph_capture_sizes": [1, 16]}),
    ]
    s = cli.resolve(args, has_gpu=True)
    assert s["dtype"] == "bfloat16" and s["enforce_eager"] is False and s["requests"] is None
    assert serve.paper_differences(s) == {}  # the defaults are the paper's method
    engine = cli.engine_settings(s, "dense", tmp_path)
    assert engine["num_gpu_blocks_override"] == 20 and engine["max_num_seqs"] == 8
    assert "num_gpu_blocks_override" not in cli.engine_settings(s, "sambay", tmp_path)
    flags = cli.server_flags(
        {"enable_prefix_caching": False, "enforce_eager": True, "max_model_len": 10, "compilation_config": {"level": 3}}
    )
    assert flags == [
        "--no-enable-prefix-caching",
        "--enforce-eager",
        "--max-model-len",
        "10",
        "--compilation-config",
        '{"level": 3}',
    ]
    tiny = cli.resolve(
        cli.parser().parse_args(["run", "--size", "tiny", "--output-len", "8", "--requests", "5"]), has_gpu=False
    )
    assert tiny["dtype"] == "float32" and tiny["enforce_eager"] is True and tiny["output_len"] == 8
    diffs = serve.paper_differences(tiny)
    assert diffs["size"] == {"paper": "full", "ran": "tiny"} and diffs["output_len"]["ran"] == 8
    assert diffs["requests"] == {"paper": "4C+32", "ran": 5}
    per_client = cli.resolve(cli.parser().parse_args(["run", "--requests-per-client", "2"]), has_gpu=True)
    assert serve.paper_differences(per_client) == {"requests": {"paper": "4C+32", "ran": "2C"}}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "--modes", "decode,bogus"], "unknown bogus"),
        (["run", "--batches", "1,0"], "positive integers"),
        (["run", "--contexts", "2k"], "comma-separated integers"),
        (["run", "--engine-arg", "novalue"], "KEY=VALUE"),
        (["run", "--engine-arg", "llama:x=1"], "unknown model 'llama'"),
        (["run", "--size", "huge"], "invalid choice"),
    ],
)
def test_bad_flags_are_refused_with_the_reason(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "--jitter", "1.5"], "--jitter"),
        (["run", "--size", "tiny", "--prompt-len", "4096"], "does not fit --max-model-len 2048"),
        (["run", "--requests", "4", "--requests-per-client", "2"], "not both"),
        (["run", "--requests", "0"], "--requests must be at least 1"),
    ],
)
def test_inconsistent_settings_are_refused(argv, message):
    with pytest.raises(SystemExit, match=message):
        cli.main(argv)


def _doc() -> dict:
    point = {
        "model": "sambay",
        "batch": 4,
        "context": 256,
        "prompt_len": 246,
        "context_mean": 256.5,
        "batch_running": 4,
        "limited_by": None,
        "steps": 8,
        "ms_per_step": 3.2,
        "tok_s": 1250.0,
        "prefill_s": 0.1,
        "bytes_per_step": 10**6,
        "roofline_ms": None,
        "roofline_fraction": None,
    }
    return {
        "schema_version": 1,
        "tool": "sambay-bench",
        "command": ["sambay-bench", "run"],
        "started_at": "x",
        "finished_at": None,
        "host": {"python": "3.11", "platform": "linux"},
        "environment": {"device": "cpu"},
        "settings": {
            "modes": ["decode"],
            "models": ["sambay"],
            "size": "tiny",
            "dtype": "float32",
            "max_model_len": 2048,
            "gpu_memory_utilization": 0.9,
            "time_budget_s": None,
        },
        "models": {
            "sambay": {
                "architecture": "Phi4FlashForCausalLM",
                "vocab_size": 512,
                "decode_bytes": {"params": 1, "weight_bytes": 2, "kv_token_bytes": 3},
            }
        },
        "modes": {"decode": {"points": [point], "skipped": []}},
    }


def test_schema_accepts_a_document_and_names_what_is_wrong():
    validate(_doc())
    for mutate, where in [
        (lambda d: d["modes"]["decode"]["points"][0].pop("ms_per_step"), "ms_per_step"),
        (lambda d: d["modes"]["decode"]["points"][0].update(ms_per_step=0.0), "0.0"),
        (lambda d: d["modes"]["decode"]["points"][0].update(limited_by="oom"), "oom"),
        (lambda d: d["modes"].update(bogus={"points": [], "skipped": []}), "bogus"),
        (lambda d: d["models"].update(llama={}), "llama"),
    ]:
        doc = copy.deepcopy(_doc())
        mutate(doc)
        with pytest.raises(jsonschema.ValidationError, match=where):
            validate(doc)
    assert schema()["title"].startswith("sambay-bench")


def test_json_safe_turns_non_finite_numbers_into_null():
    assert json_safe({"a": [math.nan, 1.0, math.inf], "b": (2, -math.inf)}) == {"a": [None, 1.0, None], "b": [2, None]}


def _echo_run(ctx, lens: list[int], max_model_len: int, budget_s: float) -> None:
    raise AssertionError("not run here: the engine worker would call it")


ECHO = Mode(
    name="echo",
    title="Echo (a mode this test adds)",
    runs_in=OFFLINE,
    options=(Option("echo_lens", int_list, "lengths", full=[8, 16], tiny=[2]),),
    run=_echo_run,
    params=lambda s: {"lens": s["echo_lens"]},
    engine_args=lambda s: {"max_num_seqs": 3, "dtype": "ignored: the user's setting wins"},
    check=lambda s: None if max(s["echo_lens"]) < s["max_model_len"] else sys.exit("echo: too long"),
    point_schema={
        "type": "object",
        "required": ["model", "n"],
        "properties": {"model": {"$ref": "#/$defs/model"}, "n": {"type": "integer", "minimum": 1}},
    },
    brief=lambda p: f"n={p['n']}",
    table=lambda doc: "echo table: " + ",".join(str(p["n"]) for p in doc["modes"]["echo"]["points"]),
)


def test_a_mode_is_one_registry_entry(monkeypatch, tmp_path):
    """A mode registered and nowhere else: the command line, the settings, the engine worker's spec,
    the JSON schema and the report all take it from the registry."""
    monkeypatch.setitem(MODES, "echo", ECHO)
    args = cli.parser().parse_args(["run", "--modes", "echo,ttft", "--echo-lens", "5,6"])
    s = cli.resolve(args, has_gpu=False)
    assert s["modes"] == ["echo", "ttft"] and s["echo_lens"] == [5, 6]
    assert cli.resolve(cli.parser().parse_args(["run", "--size", "tiny"]), has_gpu=False)["echo_lens"] == [2]
    with pytest.raises(SystemExit, match="echo: too long"):
        cli.main(["run", "--echo-lens", "70000"])

    bench = cli.Bench(s, tmp_path)
    spec = bench.offline_spec("sambay", tmp_path, 512)
    assert list(spec["modes"]) == ["ttft", "echo"]  # the registry's order, not the flag's
    assert spec["modes"]["echo"] == {"lens": [5, 6], "max_model_len": s["max_model_len"], "budget_s": math.inf}
    assert spec["engine"]["max_num_seqs"] == 3 and spec["engine"]["dtype"] == "float32"

    bench.results.doc["models"]["sambay"] = {
        "architecture": "Phi4FlashForCausalLM",
        "vocab_size": 512,
        "decode_bytes": {"params": 1, "weight_bytes": 2, "kv_token_bytes": 3},
    }
    bench.results.add_point("echo", {"model": "sambay", "n": 7})
    validate(bench.results.doc)
    bench.results.doc["modes"]["echo"]["points"].append({"model": "sambay", "n": 0})
    with pytest.raises(jsonschema.ValidationError, match="0"):
        validate(bench.results.doc)
    bench.results.doc["modes"]["echo"]["points"].pop()
    text = render(bench.results.doc, tmp_path, plots=False)
    assert "## Echo (a mode this test adds)\n\necho table: 7" in text


def test_quantized_sambay_is_the_recipe_config_with_an_untied_head(tmp_path):
    out = write_model(tmp_path, "sambay", "tiny", "W4A16")
    cfg = json.loads((out / "config.json").read_text())
    assert out.name == "sambay-tiny-w4a16" and cfg["tie_word_embeddings"] is False
    group = cfg["quantization_config"]["config_groups"]["config_group_0"]
    assert group["weights"]["num_bits"] == 4 and group["input_activations"] is None
    with pytest.raises(ValueError, match="sambay only"):
        write_model(tmp_path, "dense", "tiny", "W8A8")
    args = cli.parser().parse_args(["run", "--models", "sambay,dense", "--quantization", "W8A8"])
    with pytest.raises(SystemExit, match="SambaY only"):
        cli.resolve(args, has_gpu=False)
