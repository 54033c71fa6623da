"""Shared fixtures. Engine tests run vLLM's CPU build in-process on a tiny checkpoint that the
project generates itself; nothing is downloaded."""

from __future__ import annotations

import contextlib
import os

# Before anything imports vLLM: CPU KV-cache budget (GiB), engine in-process for speed, no hub.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    from vllm_sambay.testing.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "sambay", seed=0)


@contextlib.contextmanager
def served(cmd: list[str], log_path, ready_timeout: float = 300):
    """Run a multi-process server (``cmd`` + ``--host/--port``) until ``/health`` answers; yield
    ``(base_url, proc)``; on exit stop it and make sure no engine process outlives it."""
    from sambay_bench.server import ServerError, ServerProcess

    env = {"VLLM_CPU_KVCACHE_SPACE": "1"}
    srv = ServerProcess(cmd, log_path, ready_timeout_s=ready_timeout, env=env)
    srv.env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)  # the real multi-process server
    try:
        srv.start()
    except ServerError as exc:
        pytest.fail(str(exc))
    try:
        yield srv.base_url, srv.proc
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def serve_subprocess():
    return served
