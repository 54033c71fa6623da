"""Decode-step differential attention on vLLM's paged KV cache, H100: the plugin's packed
single call vs the four-call composition of the old vLLM 0.10 backend vs the fused Triton
kernel (``benchmarks/diff_attention_triton.py``, beside this file until it is wired into the model) vs the HBM roofline.

Per layer of the published model (40 q heads, 20 kv heads, head_dim 64, bf16), one new token per
sequence, batch B, context L. Both variants read the same K/V bytes from HBM in the ideal case
(B * L * 20 * 64 * 2 (K and V) * 2 bytes); the four-call form reads each K half and each V half
twice. The fused kernel also applies lambda, the RMSNorm and the output scale, so it is compared
with "packed + combine" (the packed call followed by the plugin's torch combine) as well.
Prints one JSON line per point as it goes and writes JSON (and a PNG when matplotlib is available).

python benchmarks/diff_attention_micro.py OUT_DIR [--hbm-tbps 3.35] [--points 1x2048,16x8192]
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
    from diff_attention_triton import diff_attention_decode
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
    common = dict(
        max_seqlen_q=1,
        cu_seqlens_q=cu_q,
        max_seqlen_k=L,
        seqused_k=seqused,
        block_table=block_table,
        causal=True,
        softmax_scale=D**-0.5,
    )

    def packed():
        return flash_attn_varlen_func(q_packed, k_packed, v_packed, **common)

    def four_calls():
        return (
            flash_attn_varlen_func(q1, k1, v1, **common),
            flash_attn_varlen_func(q1, k1, v2, **common),
            flash_attn_varlen_func(q2, k2, v1, **common),
            flash_attn_varlen_func(q2, k2, v2, **common),
        )

    lam = torch.tensor(0.3, device=dev)
    subln_w = torch.rand(2 * D, device=dev, generator=g) + 0.5
    lambda_init = 0.45

    def combine(out):
        o = out.view(B, KV // 2, 2, group, 2 * D).float()
        diff = o[:, :, 0] - lam * o[:, :, 1]
        y = diff * torch.rsqrt(diff.pow(2).mean(-1, keepdim=True) + 1e-5) * subln_w * (1 - lambda_init)
        return y.to(dt).reshape(B, H * D)

    def packed_plus_combine():
        return combine(packed())

    def fused():
        return diff_attention_decode(
            q.view(B, H * D),
            k_packed,
            v_packed,
            block_table,
            seqused,
            L,
            num_heads=H,
            lambda_full=lam,
            lambda_init=lambda_init,
            subln_weight=subln_w,
            scale=D**-0.5,
        )

    row: dict = {"batch": B, "context": L}
    out = packed().view(B, KV // 2, 2, group, 2 * D)
    a11, a12, a21, a22 = four_calls()
    ref1 = torch.cat([a11, a12], -1).view(B, KV // 2, group, 2 * D)
    ref2 = torch.cat([a21, a22], -1).view(B, KV // 2, group, 2 * D)
    row["max_abs_diff_vs_four_calls"] = max(
        (out[:, :, 0] - ref1).abs().max().item(), (out[:, :, 1] - ref2).abs().max().item()
    )
    row["max_abs_diff_fused_vs_packed_combine"] = (fused().float() - packed_plus_combine().float()).abs().max().item()
    row["packed_ms"] = timed(packed)
    row["four_calls_ms"] = timed(four_calls)
    row["packed_plus_combine_ms"] = timed(packed_plus_combine)
    row["fused_ms"] = timed(fused)
    kv_bytes = B * L * KV * D * 2 * 2
    row["kv_bytes"] = kv_bytes
    row["roofline_ms"] = kv_bytes / (hbm_tbps * 1e12) * 1e3
    row["packed_hbm_fraction"] = row["roofline_ms"] / row["packed_ms"]
    row["four_calls_hbm_fraction"] = row["roofline_ms"] / row["four_calls_ms"]
    row["fused_hbm_fraction"] = row["roofline_ms"] / row["fused_ms"]
    row["speedup"] = row["four_calls_ms"] / row["packed_ms"]
    row["fused_vs_packed_combine"] = row["packed_plus_combine_ms"] / row["fused_ms"]
    return row


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--hbm-tbps", type=float, default=3.35, help="H100 SXM HBM3 peak")
    ap.add_argument("--points", default="", help="BxL,... (default: B in 1,16,64 x L in 2K,8K,32K)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    points = [tuple(map(int, p.split("x"))) for p in args.points.split(",") if p] or [
        (B, L) for L in (2048, 8192, 32768) for B in (1, 16, 64)
    ]

    rows = []
    with open(args.out / "diff_attention_micro.jsonl", "a") as partial:
        for B, L in points:
            try:
                row = measure(B, L, args.hbm_tbps)
            except Exception as exc:  # keep the other points
                row = {"batch": B, "context": L, "error": repr(exc)[:500]}
            print(json.dumps(row), flush=True)
            partial.write(json.dumps(row) + "\n")
            partial.flush()
            rows.append(row)
            torch.cuda.empty_cache()
    import vllm

    result = {
        "what": "decode differential attention per layer, bf16, 40q/20kv heads, head_dim 64, paged (block 64)",
        "gpu": torch.cuda.get_device_name(),
        "vllm": vllm.__version__,
        "torch": torch.__version__,
        "hbm_tbps": args.hbm_tbps,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rows": rows,
    }
    (args.out / "diff_attention_micro.json").write_text(json.dumps(result, indent=2))
    plot(rows, args.out / "diff_attention_micro.png")
    return 0


def plot(rows: list[dict], path: Path) -> None:
    """ms per layer vs context, one panel per batch size, every variant beside the roofline."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    ok = [r for r in rows if "error" not in r]
    batches = sorted({r["batch"] for r in ok})
    if not batches:
        return
    fig, axes = plt.subplots(1, len(batches), figsize=(5 * len(batches), 4), squeeze=False)
    for ax, b in zip(axes[0], batches, strict=True):
        pts = sorted((r for r in ok if r["batch"] == b), key=lambda r: r["context"])
        ctx = [r["context"] for r in pts]
        for key in ("four_calls_ms", "packed_ms", "packed_plus_combine_ms", "fused_ms", "roofline_ms"):
            ax.plot(ctx, [r[key] for r in pts], marker="o", label=key.removesuffix("_ms"))
        ax.set(xscale="log", yscale="log", xlabel="context (tokens)", ylabel="ms per layer", title=f"batch {b}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
