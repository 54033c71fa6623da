"""The fused Triton decode kernel, checked in a fresh interpreter: Triton fixes interpreter mode
when it is first imported, and by now vLLM has imported it in compiled mode. The cases live in
``triton_kernel_cases.py``; ``TRITON_INTERPRET=0`` (GPU machine) runs them compiled on CUDA."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CASES = Path(__file__).with_name("triton_kernel_cases.py")


def test_fused_decode_kernel_cases():
    env = {**os.environ, "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET", "1")}
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(CASES)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=CASES.parents[2],
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert " passed" in out.stdout.splitlines()[-1], out.stdout[-500:]
