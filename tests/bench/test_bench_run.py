"""``sambay-bench run --size tiny``: every mode, both models, the real console script, real vLLM
engines and servers on CPU. Checks the JSON against its schema and the numbers against each other
and against what was asked for; then the time-budget and failed-start paths."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sambay_bench.schema import validate

pytestmark = pytest.mark.engine
PNG = b"\x89PNG\r\n\x1a\n"


def bench(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("sambay-bench")  # the console script beside this interpreter
    assert exe.exists(), f"the sambay-bench console script is not installed ({exe})"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout)


def tiny_bench(out: Path, *args: str, rc: int = 0) -> dict:
    """``sambay-bench run --size tiny --out OUT ARGS``: the exit status it must have, and its
    bench.json, checked against the schema."""
    r = bench("run", "--size", "tiny", "--out", str(out), *args)
    assert r.returncode == rc, r.stdout[-3000:] + r.stderr[-3000:]
    doc = json.loads((out / "bench.json").read_text())
    validate(doc)
    return doc


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "run"
    # 20 KV blocks of 128 tokens for the dense model: 16 sequences of 256 tokens cannot all fit.
    # 512-token steps: a batch takes several steps to prefill while its first requests already decode.
    tiny_bench(out, "--engine-arg", "dense:num_gpu_blocks_override=20", "--engine-arg", "max_num_batched_tokens=512")
    return out


def by(points: list[dict], *keys: str) -> dict:
    return {tuple(p[k] for k in keys): p for p in points}


def test_writes_a_valid_document_with_every_mode_for_both_models(tiny_run):
    doc = json.loads((tiny_run / "bench.json").read_text())
    validate(doc)  # as written at the end, after the report
    assert doc["command"][:3] == ["sambay-bench", "run", "--size"] and doc["finished_at"]
    env = doc["environment"]
    assert env["device"] == "cpu" and env["vllm"] and env["torch"]
    for mode in ("serve", "decode", "genlen", "ttft"):
        assert {p["model"] for p in doc["modes"][mode]["points"]} == {"sambay", "dense"}, mode
        assert doc["modes"][mode]["skipped"] == [], mode
    assert all(not m.get("errors") for m in doc["models"].values())
    diffs = doc["modes"]["serve"]["paper_method"]["differences"]
    assert {"size", "prompt_len", "output_len", "concurrency"} <= diffs.keys()  # says what was reduced


def test_serve_mode_numbers_are_consistent(tiny_run):
    doc = json.loads((tiny_run / "bench.json").read_text())
    for p in doc["modes"]["serve"]["points"]:
        c = p["concurrency"]
        assert p["ok"] == p["requests_planned"] == 4 * c + 32 and p["failed"] == 0, p
        assert p["queries_per_s"] == pytest.approx(c / p["mean_latency_s"])
        assert 0 < p["ttft_ms"]["mean"] <= p["e2e_ms"]["mean"] <= p["mean_latency_s"] * 1e3 + 1
        assert p["itl_ms"]["n"] > 0 and p["output_tok_s"] > 0
        # usage from the server: the benchmark tokenizer makes prompts exactly as long as drawn,
        # and ignore_eos makes every request generate exactly max_tokens
        for line in (tiny_run / "logs" / f"serve-{p['model']}-c{c}.jsonl").read_text().splitlines():
            rec = json.loads(line)
            assert rec["prompt_tokens"] == rec["planned_prompt_len"], rec
            assert rec["output_tokens"] == rec["planned_output_len"], rec
    s = by(doc["modes"]["serve"]["points"], "model", "concurrency")
    assert len({s["sambay", c]["prompt_tokens_mean"] for c in (1, 2, 4)}) > 1  # lengths are jittered


def test_decode_sweep_measures_running_batches_and_the_kv_limit(tiny_run):
    doc = json.loads((tiny_run / "bench.json").read_text())
    pts = by(doc["modes"]["decode"]["points"], "model", "batch", "context")
    assert len(pts) == 2 * 3 * 2
    for (model, batch, context), p in pts.items():
        assert p["prompt_len"] + 2 + 8 // 2 == context
        assert context - 1 <= p["context_mean"] <= context + 32, p  # early starters decode during the fill
        assert p["tok_s"] == pytest.approx(p["batch_running"] * 1e3 / p["ms_per_step"], rel=0.15), p
        assert p["roofline_ms"] is None  # no bandwidth figure for a CPU
        if (model, batch, context) == ("dense", 16, 256):
            assert p["limited_by"] == "kv_capacity" and 1 <= p["batch_running"] < 16, p
        else:
            assert p["limited_by"] is None and p["batch_running"] == batch, p
    assert doc["models"]["dense"]["offline_engine"]["num_gpu_blocks_override"] == 20
    assert "num_gpu_blocks_override" not in doc["models"]["sambay"]["offline_engine"]


def test_genlen_and_ttft_grow_with_length(tiny_run):
    doc = json.loads((tiny_run / "bench.json").read_text())
    for model in ("sambay", "dense"):
        gl = sorted((p for p in doc["modes"]["genlen"]["points"] if p["model"] == model), key=lambda p: p["gen_len"])
        assert [p["gen_len"] for p in gl] == [16, 32, 64, 128]
        assert all(a["latency_s"] < b["latency_s"] for a, b in zip(gl, gl[1:], strict=False))
        assert gl[-1]["latency_s"] > 4 * gl[0]["ttft_s"]
        tt = sorted((p for p in doc["modes"]["ttft"]["points"] if p["model"] == model), key=lambda p: p["prompt_len"])
        assert [p["prompt_len"] for p in tt] == [64, 256, 1024] and all(len(p["ttft_ms_samples"]) == 2 for p in tt)
        assert tt[0]["ttft_ms"] < tt[-1]["ttft_ms"]


def test_log_summary_and_plots(tiny_run):
    log = (tiny_run / "bench.log").read_text()
    assert "[offline-sambay]" in log and "[offline-dense]" in log and "[bench]" in log
    assert "@@sambay-bench" in log  # the raw worker output, events included
    for model in ("sambay", "dense"):
        assert "Application startup complete" in (tiny_run / "logs" / f"server-{model}.log").read_text()
    summary = (tiny_run / "summary.md").read_text()
    for heading in ("Closed-loop clients", "Decode sweep", "generation length", "TTFT"):
        assert heading in summary
    assert "(B=" in summary  # the KV-limited dense point says how many ran
    for name in ("serve.png", "decode.png", "genlen.png", "ttft.png"):
        data = (tiny_run / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000, name
    (tiny_run / "decode.png").unlink()
    r = bench("report", str(tiny_run))
    assert r.returncode == 0 and "| 16 | 256 |" in r.stdout and (tiny_run / "decode.png").exists()


def test_budget_skips_are_listed_and_a_failed_start_is_an_error(tmp_path):
    """No time: every point is skipped with its reason. Too few KV blocks for max_model_len: the
    dense engine cannot start; the run goes on, records vLLM's reason and exits 1."""
    out = tmp_path / "run"
    doc = tiny_bench(
        out,
        "--modes",
        "decode,ttft",
        "--time-budget-s",
        "0",
        "--batches",
        "1",
        "--contexts",
        "64",
        "--engine-arg",
        "dense:num_gpu_blocks_override=4",
        rc=1,
    )
    assert doc["modes"].get("decode", {"points": []})["points"] == []
    skipped = [s for m in doc["modes"].values() for s in m["skipped"]]
    assert {(s["model"], s.get("batch"), s.get("prompt_len")) for s in skipped} == {
        ("sambay", 1, None),
        ("sambay", None, 64),
        ("sambay", None, 256),
        ("sambay", None, 1024),
    }
    assert all("time budget" in s["reason"] for s in skipped)
    errors = doc["models"]["dense"]["errors"]
    assert len(errors) == 1 and "max_model_len" in errors[0].replace("max seq len", "max_model_len"), errors
    assert "## Errors" in (out / "summary.md").read_text()


def test_a_budget_cuts_a_serve_level_short_and_says_so(tmp_path):
    out = tmp_path / "run"
    doc = tiny_bench(
        out,
        "--models",
        "sambay",
        "--modes",
        "serve",
        "--concurrency",
        "2",
        "--requests",
        "1000",
        "--time-budget-s",
        "15",  # long enough for a request to finish on a loaded 2-core machine
    )
    (p,) = doc["modes"]["serve"]["points"]
    assert 0 < p["requests"] < 1000 and p["failed"] == 0 and p["cut_in_flight"] <= 2
    (cut,) = doc["modes"]["serve"]["paper_method"]["cut_by_budget"]
    assert cut == {
        "model": "sambay",
        "concurrency": 2,
        "planned": 1000,
        "measured": p["requests"],
        "cut_in_flight": p["cut_in_flight"],
    }
    assert doc["modes"]["serve"]["paper_method"]["differences"]["requests"] == {"paper": "4C+32", "ran": 1000}
    assert f"measured {p['requests']} of 1000 requests" in (out / "summary.md").read_text()
