"""The HTTP client, the Locust user, the report and the sweep against a server whose stream
timings are known (tests/loadtest/conftest.py), so every number has an expected value."""

from __future__ import annotations

import csv
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.stream_client import Endpoint

REPO = Path(__file__).resolve().parents[2]
CHAT = "/v1/chat/completions"


def body(model: str) -> dict:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "2+2?"}],
        "max_tokens": 16,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def near(value: float | None, expected: float, late: float = 40.0) -> bool:
    """Sleeps overshoot under load, they never undershoot (by more than clock noise)."""
    return value is not None and expected - 3 <= value <= expected + late


def test_client_times_reasoning_answer_and_usage(scripted_server, scripted_key):
    ep = Endpoint(scripted_server, scripted_key)
    try:
        r = ep.stream(CHAT, body("scripted"))
    finally:
        ep.close()
    assert r.ok, r
    assert near(r.ttft_ms, 200), r  # first reasoning delta; content-only TTFT would be ~500
    assert near(r.tfat_ms, 500), r
    assert near(r.e2e_ms, 600), r  # not the finish chunk (700) or the usage chunk (800)
    assert r.total_ms >= 797
    assert r.chunks == 6 and len(r.itl_ms) == 5
    for gap, expected in zip(r.itl_ms, [50, 50, 200, 50, 50], strict=True):
        assert abs(gap - expected) < 35, r.itl_ms
    assert (r.output_tokens, r.prompt_tokens, r.reasoning_tokens) == (9, 12, 4)  # usage, not the 6 chunks
    assert r.tpot_ms == pytest.approx((r.e2e_ms - r.ttft_ms) / 8)
    assert 45 < r.tpot_ms < 60


@pytest.mark.parametrize(
    ("model", "status", "error", "detail"),
    [
        ("scripted-429", 429, "HTTP 429 rate_limit_error", "server busy: 40 requests in flight"),
        ("scripted-500", 500, "HTTP 500 server_error", "boom"),
        ("scripted-midstream", 200, "stream error: internal_error", "engine died"),
        ("scripted-truncated", 200, "stream ended without [DONE]", None),
    ],
)
def test_client_failures(scripted_server, scripted_key, model, status, error, detail):
    ep = Endpoint(scripted_server, scripted_key)
    try:
        r = ep.stream(CHAT, body(model))
        again = ep.stream(CHAT, body("scripted"))  # the connection is still usable (or replaced)
    finally:
        ep.close()
    assert (r.ok, r.status, r.error, r.detail) == (False, status, error, detail)
    assert again.ok


def test_client_auth_model_lookup_and_refused_connection(scripted_server, scripted_key):
    ep = Endpoint(scripted_server, scripted_key)
    assert ep.first_model() == "scripted-mix"
    ep.close()
    unauthorized = Endpoint(scripted_server, "sk-wrong")
    assert unauthorized.stream(CHAT, body("scripted")).error == "HTTP 401 authentication_error"
    with pytest.raises(RuntimeError, match="HTTP 401"):
        unauthorized.first_model()
    unauthorized.close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    refused = Endpoint(f"http://127.0.0.1:{port}", scripted_key, timeout_s=5)
    r = refused.stream(CHAT, body("scripted"))
    refused.close()
    assert r.status == 0 and r.error.startswith("connection error:")


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_locust_reports_custom_metrics_and_errors_by_status(scripted_server, scripted_key, tmp_path):
    """Model from /v1/models (scripted-mix: ok, ok, 429, ok, 500, ...), two users, four seconds."""
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        "loadtest/locustfile.py",
        "--headless",
        "--host",
        scripted_server,
        "--users",
        "2",
        "--spawn-rate",
        "2",
        "--run-time",
        "4s",
        "--stop-timeout",
        "3",
        "--csv",
        f"{run}/locust",
        "--html",
        f"{run}/locust.html",
        "--only-summary",
        "--api-key",
        scripted_key,
    ]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stderr[-3000:]  # Locust's exit code when requests failed
    stats = {row["Type"]: row for row in read_csv(run / "locust_stats.csv")}
    assert {"POST", "TTFT", "TFAT", "TPOT", "ITL"} <= set(stats)
    assert 195 <= float(stats["TTFT"]["50%"]) <= 250  # Locust's histogram rounds to 10 ms here
    assert 495 <= float(stats["TFAT"]["50%"]) <= 550
    assert 45 <= float(stats["TPOT"]["50%"]) <= 60
    failures = {row["Error"]: int(row["Occurrences"]) for row in read_csv(run / "locust_failures.csv")}
    assert set(failures) == {"HTTP 429 rate_limit_error", "HTTP 500 server_error"}
    html = (run / "locust.html").read_text()
    assert "TTFT" in html and "HTTP 429 rate_limit_error" in html

    records = [json.loads(line) for p in run.glob("requests-*.jsonl") for line in p.read_text().splitlines()]
    statuses = {r["status"] for r in records}
    assert statuses == {200, 429, 500}
    assert all(r["output_tokens"] == 9 for r in records if r["status"] == 200)

    rep = subprocess.run(
        [sys.executable, "-m", "loadtest.report", str(run)], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert rep.returncode == 0, rep.stderr
    assert "TTFT (ms)" in rep.stdout and "429: " in rep.stdout and "500: " in rep.stdout
    summary = json.loads((run / "summary.json").read_text())["summary"]
    assert set(summary["errors_by_status"]) == {"429", "500"}
    assert 0.2 < summary["error_rate"] < 0.6  # 2 of every 5, give or take where the run was cut
    assert near(summary["ttft_ms"]["p50"], 200) and near(summary["tfat_ms"]["p50"], 500)
    assert summary["reasoning_requests"] == summary["ok"] > 0


def test_sweep_runs_each_level_and_plots(scripted_server, scripted_key, tmp_path):
    out = tmp_path / "sweep"
    cmd = [
        sys.executable,
        "-m",
        "loadtest.sweep",
        "--host",
        scripted_server,
        "--concurrency",
        "1,3",
        "--run-time",
        "3s",
        "--stop-timeout",
        "2s",
        "--out",
        str(out),
        "--",
        "--api-key",
        scripted_key,
        "--model",
        "scripted",
    ]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=90)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    points = json.loads((out / "sweep.json").read_text())["points"]
    assert [p["concurrency"] for p in points] == [1, 3]
    assert all(p["error_rate"] == 0 for p in points)
    # Every request takes 0.8 s whatever the load, so throughput scales with the users.
    assert 2.2 < points[1]["requests_per_s"] / points[0]["requests_per_s"] < 3.6
    assert (out / "sweep.png").stat().st_size > 10_000
    assert (out / "c0003" / "summary.json").exists() and (out / "c0003" / "ttft_hist.png").exists()
