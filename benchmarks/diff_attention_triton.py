"""Fused differential-attention decode over vLLM's paged KV cache (Triton, split-KV).

One query token per sequence. For every packed KV group g (K'_g = [k1_g | k2_g], V'_g =
[v1_g | v2_g], the bytes vLLM's cache already holds, see ``layers/diff_attention.py``) a program
streams its share of the context ONCE and keeps two online softmaxes: q1 against the k1 half and
q2 against the k2 half, both weighting the full V' row. A second, tiny kernel merges the splits
and applies ``subln(a1 - lambda * a2) * (1 - lambda_init)``, so the layer's attention ends in
[B, H*d], ready for ``out_proj``.

Where it lives: beside its micro-benchmark, not in the installed plugin, until the GPU
measurement shows it beats the packed single call and it is wired into the model with GPU parity.

Why it exists: the plugin's packed single call already reads each K/V byte once, but spends
half of every query-key product on zero padding and runs the combine and RMSNorm as separate
ops. This kernel does the exact work; whether that pays on an H100 is measured by
``benchmarks/diff_attention_micro.py`` (CPU CI checks numerics under ``TRITON_INTERPRET=1``).

Cache contract: ``k_cache``/``v_cache`` are [num_blocks, block_size, KV/2, 2d] views with any
strides (vLLM's FlashAttention cache ``kv_cache[0]``/``kv_cache[1]``), ``block_table`` [B, max
blocks] int32, ``seq_lens`` [B] int32 counting the new token (already written to the cache).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from vllm_sambay.config import SUBLN_EPS

BLOCK_N = 32
# Enough programs to keep every SM of an H100 (132) busy with two resident programs each.
TARGET_PROGRAMS = 264


@triton.jit
def _split_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    block_table_ptr,
    seq_lens_ptr,
    m_ptr,
    l_ptr,
    acc_ptr,
    stride_qb,
    stride_kb,
    stride_ks,
    stride_kh,
    stride_vb,
    stride_vs,
    stride_vh,
    stride_bt,
    scale,
    window,
    chunk,
    block_size,
    num_splits,
    GS: tl.constexpr,
    GS_PAD: tl.constexpr,
    D: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    b = tl.program_id(0)
    g = tl.program_id(1)
    s = tl.program_id(2)
    num_groups = tl.num_programs(1)
    seq_len = tl.load(seq_lens_ptr + b)
    first = 0
    if window > 0:
        first = tl.maximum(seq_len - window, 0)
    lo = first + s * chunk
    hi = tl.minimum(lo + chunk, seq_len)

    rows = tl.arange(0, GS_PAD)
    row_ok = rows < GS
    dims = tl.arange(0, D)
    dims2 = tl.arange(0, 2 * D)
    # q1 of group g = even raw heads 2*(g*GS + i); q2 = the odd heads right after them.
    head = 2 * (g * GS + rows)
    q1 = tl.load(q_ptr + b * stride_qb + head[:, None] * D + dims[None, :], mask=row_ok[:, None], other=0.0)
    q2 = tl.load(q_ptr + b * stride_qb + (head + 1)[:, None] * D + dims[None, :], mask=row_ok[:, None], other=0.0)

    m1 = tl.full([GS_PAD], -float("inf"), tl.float32)
    m2 = tl.full([GS_PAD], -float("inf"), tl.float32)
    l1 = tl.zeros([GS_PAD], tl.float32)
    l2 = tl.zeros([GS_PAD], tl.float32)
    acc1 = tl.zeros([GS_PAD, 2 * D], tl.float32)
    acc2 = tl.zeros([GS_PAD, 2 * D], tl.float32)
    for start in range(lo, hi, BLOCK_N):
        tok = start + tl.arange(0, BLOCK_N)
        ok = tok < hi
        blk = tl.load(block_table_ptr + b * stride_bt + tok // block_size, mask=ok, other=0)
        k_row = k_ptr + blk * stride_kb + (tok % block_size) * stride_ks + g * stride_kh
        v_row = v_ptr + blk * stride_vb + (tok % block_size) * stride_vs + g * stride_vh
        k1 = tl.load(k_row[:, None] + dims[None, :], mask=ok[:, None], other=0.0)
        k2 = tl.load(k_row[:, None] + D + dims[None, :], mask=ok[:, None], other=0.0)
        v = tl.load(v_row[:, None] + dims2[None, :], mask=ok[:, None], other=0.0)

        s1 = tl.dot(q1, tl.trans(k1)).to(tl.float32) * scale
        s2 = tl.dot(q2, tl.trans(k2)).to(tl.float32) * scale
        s1 = tl.where(ok[None, :], s1, -float("inf"))
        s2 = tl.where(ok[None, :], s2, -float("inf"))
        new1 = tl.maximum(m1, tl.max(s1, 1))
        new2 = tl.maximum(m2, tl.max(s2, 1))
        p1 = tl.exp(s1 - new1[:, None])
        p2 = tl.exp(s2 - new2[:, None])
        a1 = tl.exp(m1 - new1)
        a2 = tl.exp(m2 - new2)
        l1 = l1 * a1 + tl.sum(p1, 1)
        l2 = l2 * a2 + tl.sum(p2, 1)
        acc1 = acc1 * a1[:, None] + tl.dot(p1.to(v.dtype), v).to(tl.float32)
        acc2 = acc2 * a2[:, None] + tl.dot(p2.to(v.dtype), v).to(tl.float32)
        m1 = new1
        m2 = new2

    # partials laid out [B, G, S, 2 halves, GS_PAD(, 2D)]
    part = ((b * num_groups + g) * num_splits + s) * 2
    tl.store(m_ptr + part * GS_PAD + rows, m1)
    tl.store(m_ptr + (part + 1) * GS_PAD + rows, m2)
    tl.store(l_ptr + part * GS_PAD + rows, l1)
    tl.store(l_ptr + (part + 1) * GS_PAD + rows, l2)
    cell = rows[:, None] * (2 * D) + dims2[None, :]
    tl.store(acc_ptr + part * GS_PAD * 2 * D + cell, acc1)
    tl.store(acc_ptr + (part + 1) * GS_PAD * 2 * D + cell, acc2)


@triton.jit
def _merge_kernel(
    m_ptr,
    l_ptr,
    acc_ptr,
    lambda_ptr,
    weight_ptr,
    out_ptr,
    stride_ob,
    lambda_init,
    eps,
    num_splits,
    GS: tl.constexpr,
    GS_PAD: tl.constexpr,
    D: tl.constexpr,
):
    b = tl.program_id(0)
    g = tl.program_id(1)
    num_groups = tl.num_programs(1)
    rows = tl.arange(0, GS_PAD)
    dims2 = tl.arange(0, 2 * D)
    cell = rows[:, None] * (2 * D) + dims2[None, :]
    base = (b * num_groups + g) * num_splits * 2

    m1 = tl.full([GS_PAD], -float("inf"), tl.float32)
    m2 = tl.full([GS_PAD], -float("inf"), tl.float32)
    for s in range(num_splits):
        m1 = tl.maximum(m1, tl.load(m_ptr + (base + 2 * s) * GS_PAD + rows))
        m2 = tl.maximum(m2, tl.load(m_ptr + (base + 2 * s + 1) * GS_PAD + rows))
    l1 = tl.zeros([GS_PAD], tl.float32)
    l2 = tl.zeros([GS_PAD], tl.float32)
    o1 = tl.zeros([GS_PAD, 2 * D], tl.float32)
    o2 = tl.zeros([GS_PAD, 2 * D], tl.float32)
    for s in range(num_splits):
        part = base + 2 * s
        ms1 = tl.load(m_ptr + part * GS_PAD + rows)
        ms2 = tl.load(m_ptr + (part + 1) * GS_PAD + rows)
        # A split that saw no token has m = -inf and contributes nothing.
        w1 = tl.where(ms1 > -float("inf"), tl.exp(ms1 - m1), 0.0)
        w2 = tl.where(ms2 > -float("inf"), tl.exp(ms2 - m2), 0.0)
        l1 += w1 * tl.load(l_ptr + part * GS_PAD + rows)
        l2 += w2 * tl.load(l_ptr + (part + 1) * GS_PAD + rows)
        o1 += w1[:, None] * tl.load(acc_ptr + part * GS_PAD * 2 * D + cell)
        o2 += w2[:, None] * tl.load(acc_ptr + (part + 1) * GS_PAD * 2 * D + cell)

    lam = tl.load(lambda_ptr).to(tl.float32)
    diff = o1 / l1[:, None] - lam * (o2 / l2[:, None])
    rms = tl.sqrt(tl.sum(diff * diff, 1) / (2 * D) + eps)
    w = tl.load(weight_ptr + dims2).to(tl.float32)
    y = diff / rms[:, None] * w[None, :] * (1.0 - lambda_init)
    head = g * GS + rows  # output head order = q1 (even) head order
    ptrs = out_ptr + b * stride_ob + head[:, None] * (2 * D) + dims2[None, :]
    tl.store(ptrs, y.to(out_ptr.dtype.element_ty), mask=(rows < GS)[:, None])


def pick_num_splits(batch: int, groups: int, max_span: int) -> int:
    """Split the context only as far as needed to fill the GPU: one program per (sequence,
    group) already does it at large batch; at batch 1 a 32K context is cut ~26 ways."""
    per_row = max(1, math.ceil(TARGET_PROGRAMS / max(1, batch * groups)))
    return max(1, min(per_row, math.ceil(max_span / BLOCK_N)))


def diff_attention_decode(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    seq_lens: torch.Tensor,
    max_seq_len: int,
    *,
    num_heads: int,
    lambda_full: torch.Tensor,
    lambda_init: float,
    subln_weight: torch.Tensor,
    scale: float,
    window: int | None = None,
    num_splits: int | None = None,
) -> torch.Tensor:
    """Differential attention for one new token per sequence -> [B, H*d] (``combine``'s output).

    ``q`` is the raw query projection [B, H*d] (even heads = q1, odd = q2); ``lambda_full`` a
    0-d tensor (no host sync); ``window`` the sliding window in keys, None for global layers."""
    batch = q.shape[0]
    _, block_size, groups, two_d = k_cache.shape
    d = two_d // 2
    if num_heads % (2 * groups) or q.shape[1] != num_heads * d:
        raise ValueError(f"query [B, {q.shape[1]}] does not match {num_heads} heads x {d} over {groups} KV groups")
    if k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1 or q.stride(-1) != 1:
        raise ValueError("the last dimension of q and of the caches must be contiguous")
    group_size = num_heads // 2 // groups
    gs_pad = max(16, triton.next_power_of_2(group_size))  # tl.dot needs 16 rows
    span = min(max_seq_len, window) if window else max_seq_len
    splits = num_splits or pick_num_splits(batch, groups, span)
    chunk = math.ceil(math.ceil(span / splits) / BLOCK_N) * BLOCK_N
    f32 = dict(device=q.device, dtype=torch.float32)
    m = torch.empty(batch, groups, splits, 2, gs_pad, **f32)
    lse = torch.empty_like(m)
    acc = torch.empty(batch, groups, splits, 2, gs_pad, 2 * d, **f32)
    _split_kernel[(batch, groups, splits)](
        q,
        k_cache,
        v_cache,
        block_table,
        seq_lens,
        m,
        lse,
        acc,
        q.stride(0),
        k_cache.stride(0),
        k_cache.stride(1),
        k_cache.stride(2),
        v_cache.stride(0),
        v_cache.stride(1),
        v_cache.stride(2),
        block_table.stride(0),
        scale,
        window or 0,
        chunk,
        block_size,
        splits,
        GS=group_size,
        GS_PAD=gs_pad,
        D=d,
        BLOCK_N=BLOCK_N,
    )
    out = torch.empty(batch, num_heads * d, device=q.device, dtype=q.dtype)
    _merge_kernel[(batch, groups)](
        m,
        lse,
        acc,
        lambda_full.reshape(1),
        subln_weight,
        out,
        out.stride(0),
        lambda_init,
        SUBLN_EPS,
        splits,
        GS=group_size,
        GS_PAD=gs_pad,
        D=d,
    )
    return out
