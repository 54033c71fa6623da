"""Full-size SambaY (published config, dummy weights) on one GPU: start-up with the default
compilation (torch.compile + CUDA graphs), a generation, and a quick decode-rate probe.

python scripts/gpu/full_size_smoke.py OUT_JSON [--max-model-len 32768] [--enforce-eager]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--max-model-len", type=int, default=32768)
    ap.add_argument("--enforce-eager", action="store_true")
    ap.add_argument("--gen", type=int, default=256)
    args = ap.parse_args()
    import torch
    import vllm
    from vllm import LLM, SamplingParams

    from sambay_bench.models import write_model

    model_dir = write_model(tempfile.mkdtemp(), "sambay", "full")
    t0 = time.perf_counter()
    llm = LLM(
        model=str(model_dir),
        load_format="dummy",
        skip_tokenizer_init=True,
        dtype="bfloat16",
        max_model_len=args.max_model_len,
        enforce_eager=args.enforce_eager,
        gpu_memory_utilization=0.85,
    )
    start_s = time.perf_counter() - t0
    result = {
        "gpu": torch.cuda.get_device_name(),
        "vllm": vllm.__version__,
        "torch": torch.__version__,
        "enforce_eager": args.enforce_eager,
        "engine_start_s": start_s,
        "decode": [],
    }
    print(json.dumps(result), flush=True)
    warm = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True, detokenize=False)
    llm.generate([{"prompt_token_ids": list(range(10, 2010))}], warm, use_tqdm=False)  # kernel JIT warm-up
    for batch, prompt_len in [(1, 2000), (16, 2000), (64, 2000)]:
        prompts = [{"prompt_token_ids": [(i * 7 + j) % 50000 + 10 for j in range(prompt_len)]} for i in range(batch)]
        sp = SamplingParams(temperature=0.0, max_tokens=args.gen, ignore_eos=True, detokenize=False)
        t0 = time.perf_counter()
        outs = llm.generate(prompts, sp, use_tqdm=False)
        dt = time.perf_counter() - t0
        m = outs[0].metrics
        n = sum(len(o.outputs[0].token_ids) for o in outs)
        row = {"batch": batch, "prompt_len": prompt_len, "gen": args.gen, "wall_s": dt, "out_tok_per_s": n / dt}
        if m is not None and getattr(m, "first_token_ts", None):
            row["ttft_s_first_req"] = m.first_token_ts - m.scheduled_ts if getattr(m, "scheduled_ts", None) else None
        result["decode"].append(row)
        print(json.dumps(row), flush=True)
    args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
