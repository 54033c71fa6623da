"""vLLM (CPU, float32) against the float64 reference on the tiny checkpoint: greedy tokens
identical and per-token logprobs within 1e-4, under every scheduling path."""

from __future__ import annotations

import pytest
import torch

from vllm_sambay.testing.parity import ParityReport, compare, default_prompts, run_vllm

pytestmark = pytest.mark.engine

MAX_TOKENS = 32
LOGPROB_TOL = 1e-4


def check(reference, prompts, results) -> ParityReport:
    pairs = zip(prompts, results, strict=True)
    report = ParityReport([compare(reference, p, toks, lps) for p, (toks, lps, _) in pairs])
    for prompt, (tokens, _, _) in zip(prompts, results, strict=True):
        expected, _ = reference.greedy_generate(prompt, MAX_TOKENS)
        assert tokens == expected, f"greedy tokens differ for a {len(prompt)}-token prompt"
    assert report.token_agreement == 1.0, report.to_dict()
    assert report.max_logprob_error < LOGPROB_TOL, report.to_dict()
    print(f"\nparity: agreement {report.token_agreement:.3f}, max logprob error {report.max_logprob_error:.2e}")
    return report


@pytest.fixture(scope="module")
def prompts(tiny_config):
    ps = default_prompts(tiny_config.vocab_size, tiny_config.sliding_window)
    assert max(map(len, ps)) > 3 * tiny_config.sliding_window
    return ps


def test_defaults_chunked_prefill_and_prefix_caching_on(tiny_checkpoint, reference, prompts, make_engine):
    with make_engine(tiny_checkpoint) as llm:
        assert llm.llm_engine.vllm_config.cache_config.enable_prefix_caching
        check(reference, prompts, run_vllm(llm, prompts, MAX_TOKENS))


@pytest.mark.parametrize("prefix_caching", [True, False], ids=["prefix-cache", "no-prefix-cache"])
def test_prefill_split_into_chunks(tiny_checkpoint, reference, prompts, make_engine, prefix_caching):
    budget = 32
    assert max(map(len, prompts)) > 2 * budget  # the long prompts take several steps
    with make_engine(
        tiny_checkpoint, max_num_batched_tokens=budget, max_num_seqs=4, enable_prefix_caching=prefix_caching
    ) as llm:
        check(reference, prompts, run_vllm(llm, prompts, MAX_TOKENS))


def test_prefix_cache_hits_give_the_same_tokens(tiny_checkpoint, reference, tiny_config, make_engine):
    g = torch.Generator().manual_seed(1)
    shared = torch.randint(10, tiny_config.vocab_size, (150,), generator=g).tolist()
    prompts = [shared + torch.randint(10, tiny_config.vocab_size, (n,), generator=g).tolist() for n in (1, 7, 40)]
    with make_engine(tiny_checkpoint, enable_prefix_caching=True) as llm:
        first = run_vllm(llm, prompts, MAX_TOKENS)
        second = run_vllm(llm, prompts, MAX_TOKENS)
    check(reference, prompts, first)
    check(reference, prompts, second)
    assert all(cached > 0 for _, _, cached in second), "second round did not hit the prefix cache"


@pytest.mark.parametrize("prefix_caching", [True, False], ids=["prefix-cache", "no-prefix-cache"])
def test_requests_queue_behind_a_small_batch(tiny_checkpoint, reference, tiny_config, make_engine, prefix_caching):
    prompts = default_prompts(tiny_config.vocab_size, tiny_config.sliding_window, seed=2)
    prompts += default_prompts(tiny_config.vocab_size, tiny_config.sliding_window, seed=3)[:2]
    with make_engine(
        tiny_checkpoint, max_num_seqs=2, max_num_batched_tokens=64, enable_prefix_caching=prefix_caching
    ) as llm:
        check(reference, prompts, run_vllm(llm, prompts, MAX_TOKENS))


def _record_cross_decoder_rows(model) -> None:
    """Hook the cross-decoder inside the worker: one entry per step, its row count."""
    # vLLM's compile decorator calls forward() directly (no nn.Module hooks), so wrap forward.
    cross, model.rows_seen = model.model.cross_decoder, []
    forward = cross.forward

    def counting_forward(residual, memory):
        model.rows_seen.append(residual.shape[0])
        return forward(residual, memory)

    cross.forward = counting_forward


@pytest.mark.parametrize("budget", [2048, 32], ids=["one-step-prefill", "chunked-prefill"])
def test_fast_prefill_runs_the_cross_decoder_on_sampled_rows_only(
    tiny_checkpoint, reference, prompts, make_engine, budget
):
    """--kv-sharing-fast-prefill (YOCO): the GMU + cross layers see one row per request in every
    step, yet tokens and logprobs are unchanged."""
    with make_engine(
        tiny_checkpoint, kv_sharing_fast_prefill=True, max_num_batched_tokens=budget, max_num_seqs=4
    ) as llm:
        llm.apply_model(_record_cross_decoder_rows)
        check(reference, prompts, run_vllm(llm, prompts, MAX_TOKENS))
        (rows,) = llm.apply_model(lambda model: list(model.rows_seen))
    # Each step runs one cross-decoder row per scheduled request (at most 4), never the prompt.
    assert rows and max(rows) <= len(prompts), rows
    prompt_tokens = sum(map(len, prompts))
    assert sum(rows) < prompt_tokens, (sum(rows), prompt_tokens)


@pytest.mark.parametrize("fast_prefill", [False, True], ids=["one-graph", "fast-prefill-two-graphs"])
def test_torch_compile_as_on_gpu(tiny_checkpoint, reference, prompts, make_engine, fast_prefill):
    """vLLM's default compilation (what the GPU runs, minus CUDA graphs): one compiled graph for
    the whole model, or the self- and cross-decoder compiled apart under fast prefill."""
    with make_engine(tiny_checkpoint, enforce_eager=False, kv_sharing_fast_prefill=fast_prefill) as llm:
        check(reference, prompts, run_vllm(llm, prompts, MAX_TOKENS))


BF16_LOGPROB_TOL = 0.6  # bf16 rounding on the random tiny model: measured up to 0.33


def test_bfloat16_follows_the_reference(tiny_checkpoint, reference, prompts, make_engine):
    """bf16 on this CPU: vLLM repacks a bf16 conv1d weight for its own conv kernel on CPUs with
    bf16 dot products (avx512_bf16), which the Mamba layer must not read as taps (it did: logprob
    errors of 15+ and 11 % agreement). bf16 rounding alone stays far below that; with a 200064-token
    vocabulary it flips near-ties, so tokens are judged where the reference's top-2 gap exceeds the
    bound (vllm_sambay.testing.quantized.judge)."""
    from vllm_sambay.testing.quantized import judge

    with make_engine(tiny_checkpoint, dtype="bfloat16") as llm:
        results = run_vllm(llm, prompts, MAX_TOKENS)
    verdicts = [
        judge(reference, p, toks, lps, BF16_LOGPROB_TOL) for p, (toks, lps, _) in zip(prompts, results, strict=True)
    ]
    print(f"\nbf16: {verdicts}")
    assert all(v["max_logprob_error"] < BF16_LOGPROB_TOL and not v["wrong_tokens"] for v in verdicts), verdicts
