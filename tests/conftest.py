"""Shared fixtures. Engine tests run vLLM's CPU build in-process on a tiny checkpoint that the
project generates itself; nothing is downloaded."""

from __future__ import annotations

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
    from vllm_sambay.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "sambay", seed=0)
