"""Shared fixtures. Engine tests run vLLM's CPU build in-process on a tiny checkpoint that the
project generates itself; nothing is downloaded."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time

# Before anything imports vLLM: CPU KV-cache budget (GiB), engine in-process for speed, no hub.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    from vllm_sambay.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "sambay", seed=0)


@contextlib.contextmanager
def served(cmd: list[str], log_path, ready_timeout: float = 300):
    """Run a multi-process server (``cmd`` + ``--host/--port``) until ``/health`` answers; yield
    ``(base_url, proc)``; on exit stop it and make sure no engine process outlives it."""
    import httpx
    import psutil

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)  # the real multi-process server
    base = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen([*cmd, "--host", "127.0.0.1", "--port", str(port)], stdout=out,
                                stderr=subprocess.STDOUT, env=env)
        children: list = []
        try:
            deadline = time.monotonic() + ready_timeout
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"server exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
                try:
                    if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"server not ready in {ready_timeout} s:\n{log_path.read_text()[-4000:]}")
                time.sleep(1)
            children = psutil.Process(proc.pid).children(recursive=True)
            yield base, proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
            _, alive = psutil.wait_procs(children, timeout=30)
            for child in alive:  # never leave engine processes (and their memory) to later tests
                child.kill()


@pytest.fixture(scope="session")
def serve_subprocess():
    return served
