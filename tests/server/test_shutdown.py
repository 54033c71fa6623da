"""SIGTERM: the in-flight request finishes, new ones are refused, the process exits cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

pytestmark = pytest.mark.engine


def test_sigterm_lets_in_flight_requests_finish(tiny_checkpoint, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sambay_server.cli", "--model", str(tiny_checkpoint), "--served-model-name", "m",
         "--port", str(port), "--max-model-len", "512"], stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline
            time.sleep(1)
        result = {}

        def long_request():
            body = {"model": "m", "prompt": "Go on", "max_tokens": 200, "ignore_eos": True}
            r = httpx.post(f"{base}/v1/completions", json=body, timeout=120)
            result["status"], result["tokens"] = r.status_code, r.json()["usage"]["completion_tokens"]

        import psutil

        children = psutil.Process(proc.pid).children(recursive=True)
        assert children, "expected the engine core / worker processes"
        t = threading.Thread(target=long_request)
        t.start()
        time.sleep(1.0)  # the request is running
        proc.send_signal(signal.SIGTERM)
        t.join(timeout=120)
        assert result == {"status": 200, "tokens": 200}
        # uvicorn re-raises the captured SIGTERM once shutdown is complete
        assert proc.wait(timeout=90) in (0, -signal.SIGTERM)
        text = (tmp_path / "server.log").read_text()
        assert "Finished server process" in text and "Traceback" not in text
        _, alive = psutil.wait_procs(children, timeout=30)
        assert not alive, f"engine processes left behind: {[p.pid for p in alive]}"
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
