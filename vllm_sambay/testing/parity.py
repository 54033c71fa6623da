"""Parity of a vLLM run against the pure-PyTorch reference on the same checkpoint.

The reference re-reads every sequence vLLM produced (prompt + generated tokens, teacher
forcing), so each generated position is judged in exactly the context vLLM had:
- token agreement: the fraction of positions where vLLM's token is the reference's argmax;
- logprob error: |vLLM logprob - reference logprob| of vLLM's token, max over positions.
Greedy tokens identical to the reference's own greedy decoding is checked separately.

``python -m vllm_sambay.testing.parity CKPT [--dtype float32] [engine options]`` prints a JSON report;
it runs on CPU and on the GPU machine alike.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch


@dataclass
class SequenceParity:
    prompt_len: int
    generated: int
    agreeing_positions: int
    first_disagreement: int | None  # index into the generated tokens, or None
    max_logprob_error: float


@dataclass
class ParityReport:
    sequences: list[SequenceParity] = field(default_factory=list)

    @property
    def token_agreement(self) -> float:
        total = sum(s.generated for s in self.sequences)
        return sum(s.agreeing_positions for s in self.sequences) / max(total, 1)

    @property
    def max_logprob_error(self) -> float:
        return max((s.max_logprob_error for s in self.sequences), default=0.0)

    def to_dict(self) -> dict:
        return {
            "token_agreement": self.token_agreement,
            "max_logprob_error": self.max_logprob_error,
            "sequences": [asdict(s) for s in self.sequences],
        }


def teacher_forced(reference, prompt: list[int], generated: list[int]) -> tuple[list[int], list[float]]:
    """Reference argmax and logprob of each generated token, in vLLM's context."""
    ids = torch.tensor(prompt + generated, dtype=torch.long)
    with torch.no_grad():
        logits = reference.forward(ids)
    logp = torch.log_softmax(logits.double(), dim=-1)[len(prompt) - 1 : len(ids) - 1]
    chosen = torch.tensor(generated, dtype=torch.long)
    return logp.argmax(-1).tolist(), logp.gather(1, chosen[:, None]).squeeze(1).tolist()


def compare(reference, prompt: list[int], generated: list[int], logprobs: list[float]) -> SequenceParity:
    argmax, ref_lp = teacher_forced(reference, prompt, generated)
    agree = [a == g for a, g in zip(argmax, generated, strict=True)]
    errors = [abs(a - b) for a, b in zip(logprobs, ref_lp, strict=True)]
    return SequenceParity(
        prompt_len=len(prompt),
        generated=len(generated),
        agreeing_positions=sum(agree),
        first_disagreement=agree.index(False) if not all(agree) else None,
        max_logprob_error=max(errors, default=0.0),
    )


def greedy_logprob_params(max_tokens: int):
    from vllm import SamplingParams

    return SamplingParams(temperature=0.0, max_tokens=max_tokens, logprobs=0, ignore_eos=True, detokenize=False)


def run_vllm(llm, prompts: list[list[int]], max_tokens: int):
    """Greedy generation; returns per prompt (tokens, chosen-token logprobs, cached prompt tokens)."""
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], greedy_logprob_params(max_tokens), use_tqdm=False)
    results = []
    for out in outs:
        comp = out.outputs[0]
        lps = [step[tok].logprob for tok, step in zip(comp.token_ids, comp.logprobs, strict=True)]
        results.append((list(comp.token_ids), lps, out.num_cached_tokens or 0))
    return results


def default_prompts(vocab_size: int, window: int, seed: int = 0) -> list[list[int]]:
    """Mixed lengths, two of them longer than 3x the sliding window."""
    g = torch.Generator().manual_seed(seed)
    lengths = [3, window + 5, 3 * window + 7, 5 * window + 3]
    return [torch.randint(10, vocab_size, (n,), generator=g).tolist() for n in lengths]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--reference-dtype", default="float64", choices=["float32", "float64"])
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--enforce-eager", action="store_true")
    ap.add_argument("--max-num-batched-tokens", type=int)
    ap.add_argument("--max-num-seqs", type=int, default=8)
    ap.add_argument("--no-prefix-caching", action="store_true")
    ap.add_argument("--kv-sharing-fast-prefill", action="store_true", help="YOCO: cross-decoder on sampled rows only")
    ap.add_argument(
        "--quantization",
        help="vLLM online quantization (e.g. fp8 on a GPU); the reference keeps the checkpoint's weights, so "
        "the report measures the quantization error, not a kernel's faithfulness",
    )
    ap.add_argument("--output", type=Path)
    args = ap.parse_args(argv)

    from vllm import LLM

    from ..compat import runs_model_runner_v2
    from ..config import Phi4FlashConfig
    from .reference import SambaYReference

    cfg = Phi4FlashConfig.from_pretrained(args.checkpoint)
    prompts = default_prompts(cfg.vocab_size, cfg.sliding_window or 16)
    t0 = time.perf_counter()
    llm = LLM(
        model=str(args.checkpoint),
        dtype=args.dtype,
        enforce_eager=args.enforce_eager,
        max_num_batched_tokens=args.max_num_batched_tokens,
        max_num_seqs=args.max_num_seqs,
        enable_prefix_caching=not args.no_prefix_caching,
        max_model_len=max(map(len, prompts)) + 64,
        kv_sharing_fast_prefill=args.kv_sharing_fast_prefill,
        quantization=args.quantization,
        skip_tokenizer_init=True,
    )
    start_s = time.perf_counter() - t0
    model_runner_v2 = runs_model_runner_v2(llm.llm_engine.vllm_config)
    got = run_vllm(llm, prompts, args.max_tokens)
    ref = SambaYReference.from_pretrained(args.checkpoint, dtype=getattr(torch, args.reference_dtype))
    report = ParityReport([compare(ref, p, toks, lps) for p, (toks, lps, _) in zip(prompts, got, strict=True)])
    greedy_same = all(
        ref.greedy_generate(p, args.max_tokens)[0] == toks for p, (toks, _, _) in zip(prompts, got, strict=True)
    )
    result = {
        "engine_start_s": start_s,
        "quantization": args.quantization,
        "model_runner_v2": model_runner_v2,
        "greedy_identical": greedy_same,
        **report.to_dict(),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
