from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

API_KEY = "sk-test-sambay"
MAX_PENDING = 40


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server(tiny_checkpoint, tmp_path_factory):
    """`sambay-serve` as users run it (multi-process engine), on the tiny checkpoint."""
    port = _free_port()
    log = tmp_path_factory.mktemp("sambay-serve") / "server.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
    cmd = [sys.executable, "-m", "sambay_server.cli", "--model", str(tiny_checkpoint),
           "--served-model-name", "sambay-tiny", "--port", str(port), "--api-key", API_KEY,
           "--max-pending", str(MAX_PENDING), "--max-model-len", "512", "--max-num-seqs", "16"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        try:
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"sambay-serve exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
                try:
                    if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"sambay-serve not ready in 300 s:\n{log.read_text()[-4000:]}")
                time.sleep(1)
            yield {"base": base, "proc": proc, "log": log, "max_pending": MAX_PENDING, "api_key": API_KEY}
        finally:
            import psutil

            children = psutil.Process(proc.pid).children(recursive=True)
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
            _, alive = psutil.wait_procs(children, timeout=30)
            for child in alive:  # never leave engine processes (and their memory) to later tests
                child.kill()


@pytest.fixture(scope="session")
def auth():
    return {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="session")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=f"{server['base']}/v1", api_key=API_KEY, max_retries=0, timeout=120)
