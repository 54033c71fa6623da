"""The engine core SIGKILLed mid-traffic: requests in flight get an OpenAI-style 503 (a stream its
error event), and the process exits non-zero within 10 s, so compose / k8s / Ray restart it
(before: /health 503 and /v1/models 200 forever, the process never exited)."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time

import httpx
import psutil
import pytest

pytestmark = pytest.mark.engine


def test_engine_killed_mid_traffic_exits_nonzero_within_10s(tiny_checkpoint, tmp_path, serve_subprocess):
    cmd = [sys.executable, "-m", "sambay_server.cli", "--model", str(tiny_checkpoint), "--served-model-name", "m",
           "--max-model-len", "512"]  # fmt: skip
    with serve_subprocess(cmd, tmp_path / "server.log") as (base, proc):
        results: dict = {}

        def stream():
            body = {"model": "m", "prompt": "go", "max_tokens": 400, "ignore_eos": True, "stream": True}
            with httpx.stream("POST", f"{base}/v1/completions", json=body, timeout=60) as r:
                results["stream"] = (r.status_code, [line for line in r.iter_lines() if line])

        def whole():
            body = {"model": "m", "messages": [{"role": "user", "content": "go"}], "max_tokens": 400,
                    "ignore_eos": True}  # fmt: skip
            r = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60)
            results["whole"] = (r.status_code, r.json())

        threads = [threading.Thread(target=stream), threading.Thread(target=whole)]
        for t in threads:
            t.start()
        time.sleep(1.5)  # both are generating
        cores = [p for p in psutil.Process(proc.pid).children(recursive=True) if "EngineCore" in p.name()]
        assert cores, "expected an engine core process"
        killed = time.monotonic()
        cores[0].send_signal(signal.SIGKILL)
        code = proc.wait(timeout=30)
        took = time.monotonic() - killed
        for t in threads:
            t.join(timeout=30)
    assert code != 0 and took <= 10, (code, took)
    status, body = results["whole"]
    assert status == 503 and body["error"]["code"] == 503 and body["error"]["type"] == "ServiceUnavailableError"
    status, lines = results["stream"]
    errors = [json.loads(line[6:]) for line in lines if line.startswith("data: {") and '"error"' in line]
    assert status == 200 and errors and errors[-1]["error"]["code"] == 503, lines[-3:]
    print(f"exit code {code} {took:.1f} s after SIGKILL")
