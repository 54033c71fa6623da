"""The single-call packing of differential attention equals the four-call definition.

A plain GQA attention over the packed tensors (what any vLLM backend computes) must reproduce
a naive per-head differential attention with the even/odd split and GQA inside each half."""

from __future__ import annotations

import pytest
import torch

from vllm_sambay.config import check_tensor_parallel
from vllm_sambay.layers.diff_attention import pack_query, unpack_output


def gqa_attention(q, k, v, scale, window=None):
    """Standard causal GQA: q [T, H, e], k/v [T, G, e]; q head h reads kv head h // (H/G)."""
    t, h, _ = q.shape
    g = k.shape[1]
    k = k.repeat_interleave(h // g, dim=1)
    v = v.repeat_interleave(h // g, dim=1)
    scores = torch.einsum("qhe,khe->hqk", q, k) * scale
    i = torch.arange(t)
    mask = i[None, :] > i[:, None]
    if window:
        mask |= i[None, :] <= i[:, None] - window
    scores = scores.masked_fill(mask, float("-inf"))
    return torch.einsum("hqk,khe->qhe", scores.softmax(-1), v)


def naive_differential(q, k, v, d, window=None):
    """Four attentions per the definition; returns a1, a2 [T, H/2, 2d]."""
    q1, q2 = q[:, 0::2], q[:, 1::2]
    k1, k2 = k[:, 0::2], k[:, 1::2]
    v1, v2 = v[:, 0::2], v[:, 1::2]
    s = d**-0.5
    a1 = torch.cat([gqa_attention(q1, k1, v1, s, window), gqa_attention(q1, k1, v2, s, window)], -1)
    a2 = torch.cat([gqa_attention(q2, k2, v1, s, window), gqa_attention(q2, k2, v2, s, window)], -1)
    return a1, a2


# (20, 10): one rank of the published model (40 q / 20 kv heads) under tensor parallel 2.
@pytest.mark.parametrize("heads,kv_heads", [(4, 2), (8, 4), (8, 2), (40, 20), (20, 10)])
@pytest.mark.parametrize("window", [None, 5])
def test_packed_single_call_equals_four_calls(heads, kv_heads, window):
    t, d = 13, 8
    g = torch.Generator().manual_seed(heads * 100 + kv_heads)
    q = torch.randn(t, heads, d, generator=g, dtype=torch.float64)
    k = torch.randn(t, kv_heads, d, generator=g, dtype=torch.float64)
    v = torch.randn(t, kv_heads, d, generator=g, dtype=torch.float64)
    packed_q = pack_query(q.reshape(t, -1), heads, kv_heads, d).view(t, heads, 2 * d)
    packed_k = k.reshape(t, kv_heads // 2, 2 * d)  # projection output as it is
    packed_v = v.reshape(t, kv_heads // 2, 2 * d)
    out = gqa_attention(packed_q, packed_k, packed_v, d**-0.5, window)
    a1, a2 = unpack_output(out.reshape(t, -1), heads, kv_heads, d)
    e1, e2 = naive_differential(q, k, v, d, window)
    torch.testing.assert_close(a1, e1)
    torch.testing.assert_close(a2, e2)


def test_usual_grouping_on_unsplit_heads_would_differ():
    """Guard that the test above can fail: GQA over unsplit heads (h -> h // 2) is not SambaY's."""
    t, d, heads, kv_heads = 7, 8, 8, 4
    g = torch.Generator().manual_seed(0)
    q = torch.randn(t, heads, d, generator=g, dtype=torch.float64)
    k = torch.randn(t, kv_heads, d, generator=g, dtype=torch.float64)
    v = torch.randn(t, kv_heads, d, generator=g, dtype=torch.float64)
    plain = gqa_attention(q, k, v, d**-0.5)  # head h over kv head h // 2
    e1, _ = naive_differential(q, k, v, d)
    assert not torch.allclose(plain[:, 0::2], e1[..., :d])


@pytest.mark.parametrize("tp,ok", [(1, True), (2, True), (5, True), (10, True), (3, False), (4, False), (20, False)])
def test_tensor_parallel_sizes_for_the_published_heads(tp, ok):
    if ok:
        check_tensor_parallel(40, 20, tp)
    else:
        with pytest.raises(ValueError, match=f"tensor_parallel_size={tp}"):
            check_tensor_parallel(40, 20, tp)


def test_rank_shards_compose_to_the_full_layer():
    """Contiguous head shards (what QKVParallelLinear gives each rank) computed separately and
    concatenated equal the unsharded differential attention: TP 2 needs no cross-rank traffic."""
    t, d, heads, kv_heads = 9, 8, 40, 20
    g = torch.Generator().manual_seed(7)
    q = torch.randn(t, heads, d, generator=g, dtype=torch.float64)
    k = torch.randn(t, kv_heads, d, generator=g, dtype=torch.float64)
    v = torch.randn(t, kv_heads, d, generator=g, dtype=torch.float64)
    full1, full2 = naive_differential(q, k, v, d)
    parts1, parts2 = [], []
    for r in range(2):
        qs, ks, vs = q[:, r * 20 : (r + 1) * 20], k[:, r * 10 : (r + 1) * 10], v[:, r * 10 : (r + 1) * 10]
        out = gqa_attention(
            pack_query(qs.reshape(t, -1), 20, 10, d).view(t, 20, 2 * d),
            ks.reshape(t, 5, 2 * d),
            vs.reshape(t, 5, 2 * d),
            d**-0.5,
        )
        a1, a2 = unpack_output(out.reshape(t, -1), 20, 10, d)
        parts1.append(a1)
        parts2.append(a2)
    torch.testing.assert_close(torch.cat(parts1, 1), full1)
    torch.testing.assert_close(torch.cat(parts2, 1), full2)
