"""Tensor parallel 2 on CPU: two real vLLM workers, each holding half of the differential heads,
of the packed KV groups and of the Mamba channels (the memory layer exports its half of the
memory to its half of the GMU). Greedy tokens and logprobs must still match the reference."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from vllm_sambay.testing.parity import ParityReport, compare, default_prompts

pytestmark = pytest.mark.engine

MAX_TOKENS = 24

TP_SCRIPT = """
import json, sys
from vllm import LLM
from vllm_sambay.testing.parity import run_vllm
prompts = json.loads(sys.argv[2])
llm = LLM(model=sys.argv[1], dtype="float32", enforce_eager=True, max_model_len=1024, seed=0,
          tensor_parallel_size=2, distributed_executor_backend="mp", max_num_batched_tokens=64)
print("RESULT " + json.dumps(run_vllm(llm, prompts, int(sys.argv[3]))))
"""


@pytest.fixture(scope="module")
def tp_checkpoint(tmp_path_factory):
    """8 heads / 4 KV heads: each of two ranks gets two (q1, q2) pairs and one packed KV group."""
    from vllm_sambay.testing.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(
        tmp_path_factory.mktemp("tp") / "sambay", seed=4, num_attention_heads=8, num_key_value_heads=4
    )


def test_tensor_parallel_2_matches_reference(tp_checkpoint):
    from vllm_sambay.config import Phi4FlashConfig
    from vllm_sambay.testing.reference import SambaYReference

    cfg = Phi4FlashConfig.from_pretrained(tp_checkpoint)
    prompts = default_prompts(cfg.vocab_size, cfg.sliding_window, seed=5)
    # One CPU core per rank: vLLM's CPU workers refuse to share one NUMA node's threads otherwise.
    env = {**os.environ, "VLLM_CPU_OMP_THREADS_BIND": "0|1", "VLLM_CPU_KVCACHE_SPACE": "1"}
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
    out = subprocess.run(
        [sys.executable, "-c", TP_SCRIPT, str(tp_checkpoint), json.dumps(prompts), str(MAX_TOKENS)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, out.stdout[-3000:] + out.stderr[-3000:]
    results = json.loads(lines[0].removeprefix("RESULT "))

    ref = SambaYReference.from_pretrained(tp_checkpoint, dtype=torch.float64)
    report = ParityReport([compare(ref, p, toks, lps) for p, (toks, lps, _) in zip(prompts, results, strict=True)])
    for prompt, (tokens, _, _) in zip(prompts, results, strict=True):
        assert tokens == ref.greedy_generate(prompt, MAX_TOKENS)[0], f"TP=2 tokens differ ({len(prompt)} tokens)"
    assert report.max_logprob_error < 1e-4, report.to_dict()
