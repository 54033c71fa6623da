"""Decode-step differential attention on vLLM's paged KV cache, H100: the plugin's packed
single call vs the four-call composition of the old vLLM 0.10 backend vs the HBM roofline.

Per layer of the published model (40 q heads, 20 kv heads, head_dim 64, bf16), one new token per
sequence, batch B, context L. Both variants read the same K/V bytes from HBM in the ideal case
(B * L * 20 * 64 * 2 (K and V) * 2 bytes); the four-call form reads each K half and each V half
twice. Prints and writes JSON (and a PNG when matplotlib is available).

python benchmarks/diff_attention_micro.py OUT_DIR [--hbm-tbps 3.35]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

H, KV, D = 40, 20, 64
BLOCK = 64


def timed(fn, iters: int = 30, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def measure(B: int, L: int, hbm_tbps: float) -> dict:
    from vllm.vllm_flash_attn import flash_attn_varlen_func

    dev, dt = "cuda", torch.bfloat16
    nblk = math.ceil(L / BLOCK)
    num_blocks = B * nblk
    block_table = torch.arange(num_blocks, dtype=torch.int32, device=dev).view(B, nblk)
    cu_q = torch.arange(B + 1, dtype=torch.int32, device=dev)
    seqused = torch.full((B,), L, dtype=torch.int32, device=dev)
    g = torch.Generator(device=dev).manual_seed(0)
    # packed cache: KV/2 heads of width 2D, head g = [head 2g | head 2g+1]
    k_packed = torch.randn(num_blocks, BLOCK, KV // 2, 2 * D, device=dev, dtype=dt, generator=g)
    v_packed = torch.randn(num_blocks, BLOCK, KV // 2, 2 * D, device=dev, dtype=dt, generator=g)
    q = torch.randn(B, H, D, device=dev, dtype=dt, generator=g)
    # the same numbers as four half caches for the four-call form
    k1, k2 = k_packed[..., :D].contiguous(), k_packed[..., D:].contiguous()
    v1, v2 = v_packed[..., :D].contiguous(), v_packed[..., D:].contiguous()
    q1, q2 = q[:, 0::2].contiguous(), q[:, 1::2].contiguous()
    group = (H // 2) // (KV // 2)
    z = torch.zeros(B, KV // 2, group, D, device=dev, dtype=dt)
    q_packed = torch.cat(
        [torch.cat([q1.view(B, KV // 2, group, D), z], -1), torch.cat([z, q2.view(B, KV // 2, group, D)], -1)],
        dim=2,
    ).reshape(B, H, 2 * D)
    common = dict(max_seqlen_q=1, cu_seqlens_q=cu_q, max_seqlen_k=L, seqused_k=seqused,
                  block_table=block_table, causal=True, softmax_scale=D**-0.5)

    def packed():
        return flash_attn_varlen_func(q_packed, k_packed, v_packed, **common)

    def four_calls():
        return (
            flash_attn_varlen_func(q1, k1, v1, **common), flash_attn_varlen_func(q1, k1, v2, **common),
            flash_attn_varlen_func(q2, k2, v1, **common), flash_attn_varlen_func(q2, k2, v2, **common),
        )

    row: dict = {"batch": B, "context": L}
    out = packed().view(B, KV // 2, 2, group, 2 * D)
    a11, a12, a21, a22 = four_calls()
    ref1 = torch.cat([a11, a12], -1).view(B, KV // 2, group, 2 * D)
    ref2 = torch.cat([a21, a22], -1).view(B, KV // 2, group, 2 * D)
    row["max_abs_diff_vs_four_calls"] = max(
        (out[:, :, 0] - ref1).abs().max().item(), (out[:, :, 1] - ref2).abs().max().item()
    )
    row["packed_ms"] = timed(packed)
    row["four_calls_ms"] = timed(four_calls)
    kv_bytes = B * L * KV * D * 2 * 2
    row["kv_bytes"] = kv_bytes
    row["roofline_ms"] = kv_bytes / (hbm_tbps * 1e12) * 1e3
    row["packed_hbm_fraction"] = row["roofline_ms"] / row["packed_ms"]
    row["four_calls_hbm_fraction"] = row["roofline_ms"] / row["four_calls_ms"]
    row["speedup"] = row["four_calls_ms"] / row["packed_ms"]
    return row


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--hbm-tbps", type=float, default=3.35, help="H100 SXM HBM3 peak")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    rows = []
    for L in (2048, 8192, 32768):
        for B in (1, 16, 64):
            try:
                row = measure(B, L, args.hbm_tbps)
            except Exception as exc:  # keep the other points
                row = {"batch": B, "context": L, "error": repr(exc)[:500]}
            print(json.dumps(row), flush=True)
            rows.append(row)
            torch.cuda.empty_cache()
    import vllm

    result = {
        "what": "decode differential attention per layer, bf16, 40q/20kv heads, head_dim 64, paged (block 64)",
        "gpu": torch.cuda.get_device_name(), "vllm": vllm.__version__, "torch": torch.__version__,
        "hbm_tbps": args.hbm_tbps, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows,
    }
    (args.out / "diff_attention_micro.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
