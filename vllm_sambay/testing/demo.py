"""The quick-start job: a tiny SambaY checkpoint served by vLLM, checked against the reference.

``python -m vllm_sambay.testing.demo [--checkpoint DIR] [--max-tokens N]``
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=Path("out/tiny-sambay"))
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--compile", action="store_true", help="use torch.compile (slow to start on small CPUs)")
    args = ap.parse_args(argv)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

    from .tiny import write_tiny_checkpoint

    ckpt = write_tiny_checkpoint(args.checkpoint)
    print(f"checkpoint: {ckpt}")

    from vllm import LLM, SamplingParams

    t0 = time.perf_counter()
    llm = LLM(model=str(ckpt), dtype="float32", max_model_len=1024, enforce_eager=not args.compile)
    print(f"engine ready in {time.perf_counter() - t0:.1f} s")
    questions = ["What is 12 plus 30?", "Tell me a short story about a lighthouse.", "List three prime numbers."]
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens)
    t0 = time.perf_counter()
    outs = llm.chat([[{"role": "user", "content": q}] for q in questions], params, use_tqdm=False)
    dt = time.perf_counter() - t0
    for q, out in zip(questions, outs, strict=True):
        print(f"\n<|user|> {q}\n<|assistant|> {out.outputs[0].text!r}")
    n = sum(len(o.outputs[0].token_ids) for o in outs)
    print(f"\n{n} tokens in {dt:.2f} s (random weights: the text is noise, the machinery is real)")

    import torch

    from .reference import SambaYReference

    ref = SambaYReference.from_pretrained(ckpt, dtype=torch.float64)
    same = True
    for o in outs:  # vLLM may stop early at a stop token; compare what it produced
        got = list(o.outputs[0].token_ids)
        same &= ref.greedy_generate(list(o.prompt_token_ids), len(got))[0] == got
    print(f"vLLM greedy tokens identical to the pure-PyTorch reference: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
