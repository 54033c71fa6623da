"""A short headless Locust run (two worker processes) against sambay-serve on the tiny checkpoint,
then the report: no failures, every metric there and in a sensible order, token counts exact."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.engine
REPO = Path(__file__).resolve().parents[2]
API_KEY = "sk-loadtest"
MAX_TOKENS = 16


@pytest.fixture(scope="module")
def sambay(tiny_checkpoint, tmp_path_factory, serve_subprocess):
    log = tmp_path_factory.mktemp("sambay-serve-loadtest") / "server.log"
    cmd = [
        sys.executable,
        "-m",
        "sambay_server.cli",
        "--model",
        str(tiny_checkpoint),
        "--served-model-name",
        "sambay-tiny",
        "--api-key",
        API_KEY,
        "--max-model-len",
        "512",
        "--max-num-seqs",
        "8",
    ]
    with serve_subprocess(cmd, log) as (base, _proc):
        yield base


def test_locust_run_and_report(sambay, tmp_path):
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        "loadtest/locustfile.py",
        "--headless",
        "--host",
        sambay,
        "--users",
        "4",
        "--spawn-rate",
        "4",
        "--run-time",
        "30s",
        "--processes",
        "2",
        "--stop-timeout",
        "30",
        "--csv",
        f"{run}/locust",
        "--csv-full-history",
        "--html",
        f"{run}/locust.html",
        "--only-summary",
        "--api-key",
        API_KEY,
        "--prompt-tokens",
        "32",
        "--output-tokens",
        str(MAX_TOKENS),
        "--ignore-eos",
    ]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=150)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]

    rep = subprocess.run(
        [sys.executable, "-m", "loadtest.report", str(run)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    print(rep.stdout)
    assert rep.returncode == 0, rep.stderr[-3000:]
    for label in (
        "TTFT (ms)",
        "time to first answer (ms)",
        "ITL (ms)",
        "TPOT (ms)",
        "e2e latency (ms)",
        "output tok/s per request",
        "requests/s (ok)",
        "output tok/s (all users)",
        "error rate",
    ):
        assert label in rep.stdout

    files = sorted(run.glob("requests-*.jsonl"))
    assert len(files) == 2, files  # one per worker process, nothing interleaved
    records = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert len(records) >= 20
    for r in records:
        assert r["status"] == 200 and r["error"] is None, r
        assert r["output_tokens"] == r["max_tokens"] == MAX_TOKENS  # ignore_eos, counted by usage
        assert r["prompt_tokens"] >= 30
        assert 0 < r["ttft_ms"] <= r["e2e_ms"] <= r["total_ms"]
        assert r["tfat_ms"] is None or r["tfat_ms"] >= r["ttft_ms"]  # later when there was reasoning
        assert r["tpot_ms"] == pytest.approx((r["e2e_ms"] - r["ttft_ms"]) / (MAX_TOKENS - 1))
        assert len(r["itl_ms"]) == r["chunks"] - 1 and all(g >= 0 for g in r["itl_ms"])
        assert r["ttft_ms"] + sum(r["itl_ms"]) == pytest.approx(r["e2e_ms"], abs=0.01)

    doc = json.loads((run / "summary.json").read_text())
    s = doc["summary"]
    assert s["failed"] == 0 and s["error_rate"] == 0 and s["ok"] == len(records)
    assert s["requests_per_s"] > 0 and s["output_tokens_per_s"] > 0
    assert s["output_tokens"] == MAX_TOKENS * len(records)
    for key in ("ttft_ms", "itl_ms", "tpot_ms", "e2e_ms", "output_tps"):
        assert s[key]["p50"] > 0 and s[key]["p50"] <= s[key]["p90"] <= s[key]["p99"], (key, s[key])
    assert s["ttft_ms"]["p50"] <= s["e2e_ms"]["p50"] and s["tpot_ms"]["p50"] < s["e2e_ms"]["p50"]
    assert doc["config"]["workload"]["ignore_eos"] is True and doc["config"]["processes"] == 2

    with (run / "locust_stats.csv").open(newline="") as f:
        stats = {row["Type"]: row for row in csv.DictReader(f)}
    assert {"POST", "TTFT", "ITL", "TPOT"} <= set(stats)
    assert int(stats["POST"]["Request Count"]) > 0 and int(stats["POST"]["Failure Count"]) == 0
    assert (run / "locust_failures.csv").read_text().count("\n") == 1  # the header only
    for png in doc["plots"]:
        data = (run / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, png
    assert set(doc["plots"]) == {"latency_over_time.png", "throughput_over_time.png", "ttft_hist.png"}
