"""Cases for the fused Triton decode kernel (run through test_diff_attention_triton.py, in a
process of their own) against the reference's differential attention, by Triton's interpreter
on CPU: paged cache with a shuffled block table, mixed lengths, sliding window,
split-KV merge, GQA inside each half, lambda and RMSNorm."""

from __future__ import annotations

import os

# Interpreted on CPU (CI); the GPU check runs the same tests compiled with TRITON_INTERPRET=0.
os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernel module is imported
DEVICE = "cpu" if os.environ["TRITON_INTERPRET"] == "1" else "cuda"

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

# The kernel is not wired into the model yet, so it lives beside its micro-benchmark, outside the
# installed package.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from diff_attention_triton import diff_attention_decode, pick_num_splits  # noqa: E402

from vllm_sambay.testing.reference import DifferentialCore, attention_mask  # noqa: E402

D = 16


def make_case(heads: int, kv_heads: int, seq_lens: list[int], block_size: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    core = DifferentialCore(D, lambda_init=0.45).double()
    with torch.no_grad():
        for p in core.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.3)
        core.subln.weight.add_(1.0)
    ks = [torch.randn(n, kv_heads, D, generator=g, dtype=torch.float64) for n in seq_lens]
    vs = [torch.randn(n, kv_heads, D, generator=g, dtype=torch.float64) for n in seq_lens]
    q = torch.randn(len(seq_lens), heads * D, generator=g, dtype=torch.float64)
    # Paged cache of packed groups [k_2g | k_2g+1], blocks handed out in a shuffled order.
    per_seq = [-(-n // block_size) for n in seq_lens]
    order = torch.randperm(sum(per_seq) + 3, generator=g)
    k_cache = torch.randn(len(order), block_size, kv_heads // 2, 2 * D, generator=g, dtype=torch.float64)
    v_cache = torch.randn_like(k_cache)
    table = torch.zeros(len(seq_lens), max(per_seq), dtype=torch.int32)
    used = 0
    for b, (k, v) in enumerate(zip(ks, vs, strict=True)):
        for j in range(per_seq[b]):
            blk = int(order[used])
            used += 1
            table[b, j] = blk
            rows = slice(j * block_size, min((j + 1) * block_size, len(k)))
            n = rows.stop - rows.start
            k_cache[blk, :n] = k[rows].reshape(n, kv_heads // 2, 2 * D)
            v_cache[blk, :n] = v[rows].reshape(n, kv_heads // 2, 2 * D)
    return core, q, ks, vs, k_cache, v_cache, table


def expected(core, q, ks, vs, heads, window):
    outs = []
    for b, (k, v) in enumerate(zip(ks, vs, strict=True)):
        n = len(k)
        visible = attention_mask(torch.tensor([n - 1]), torch.arange(n), window)
        outs.append(core(q[b].view(1, heads, D), k, v, visible))
    return torch.cat(outs).detach()


def run_kernel(core, q, k_cache, v_cache, table, seq_lens, heads, window, dtype, num_splits=None):
    def dev(t: torch.Tensor, dt: torch.dtype | None = None) -> torch.Tensor:
        return t.detach().to(device=DEVICE, dtype=dt or t.dtype)

    out = diff_attention_decode(
        dev(q, dtype),
        dev(k_cache, dtype),
        dev(v_cache, dtype),
        dev(table),
        dev(torch.tensor(seq_lens).int()),
        max(seq_lens),
        num_heads=heads,
        lambda_full=dev(core.lam(), torch.float32),
        lambda_init=core.lambda_init,
        subln_weight=dev(core.subln.weight, torch.float32),
        scale=D**-0.5,
        window=window,
        num_splits=num_splits,
    )
    return out.cpu()


@pytest.mark.parametrize(
    "heads,kv_heads,window,num_splits",
    [(8, 4, None, None), (8, 4, 24, None), (8, 4, None, 3), (12, 4, 40, 2), (4, 4, None, 1)],
    ids=["global", "sliding", "three-splits", "gqa3-sliding-split", "no-gqa-one-split"],
)
def test_kernel_matches_reference(heads, kv_heads, window, num_splits):
    seq_lens = [1, 17, 70, 129]
    core, q, ks, vs, kc, vc, table = make_case(heads, kv_heads, seq_lens, block_size=16)
    want = expected(core, q, ks, vs, heads, window)
    got = run_kernel(core, q, kc, vc, table, seq_lens, heads, window, torch.float32, num_splits)
    assert got.shape == (len(seq_lens), heads * D)
    torch.testing.assert_close(got.double(), want, atol=2e-5, rtol=2e-5)


def test_window_is_honoured_not_just_the_last_block():
    """Changing a key just outside the window must not move the output; just inside, it must."""
    seq_lens, window = [90], 24
    core, q, ks, vs, kc, vc, table = make_case(8, 4, seq_lens, block_size=16, seed=3)
    base = run_kernel(core, q, kc, vc, table, seq_lens, 8, window, torch.float32)
    for pos, moves in ((90 - window - 1, False), (90 - window, True)):
        kc2 = kc.clone()
        kc2[table[0, pos // 16], pos % 16] += 5.0
        out = run_kernel(core, q, kc2, vc, table, seq_lens, 8, window, torch.float32)
        assert (not torch.allclose(out, base)) is moves, pos


def test_half_precision_is_close():
    """float16: Triton 3.9's interpreter computes tl.dot on bfloat16 as raw bits (1e10 errors on
    a plain 16x16 product), so bfloat16 can only be checked on a GPU."""
    seq_lens = [33, 64]
    core, q, ks, vs, kc, vc, table = make_case(8, 4, seq_lens, block_size=16, seed=5)
    want = expected(core, q, ks, vs, 8, None)
    got = run_kernel(core, q, kc, vc, table, seq_lens, 8, None, torch.float16)
    assert got.dtype == torch.float16
    torch.testing.assert_close(got.double(), want, atol=5e-3, rtol=5e-3)


@pytest.mark.skipif(DEVICE == "cpu", reason="the interpreter mishandles bfloat16 tl.dot; GPU only")
def test_bfloat16_is_close_on_gpu():
    seq_lens = [33, 64, 700]
    core, q, ks, vs, kc, vc, table = make_case(8, 4, seq_lens, block_size=16, seed=6)
    want = expected(core, q, ks, vs, 8, None)
    got = run_kernel(core, q, kc, vc, table, seq_lens, 8, None, torch.bfloat16)
    torch.testing.assert_close(got.double(), want, atol=6e-2, rtol=6e-2)


def test_split_heuristic_fills_the_gpu_only_when_needed():
    assert pick_num_splits(batch=1, groups=10, max_span=32768) == 27  # ceil(264 / 10)
    assert pick_num_splits(batch=64, groups=10, max_span=32768) == 1
    assert pick_num_splits(batch=1, groups=10, max_span=20) == 1  # one tile of context


def test_mismatched_query_is_refused():
    core, q, ks, vs, kc, vc, table = make_case(8, 4, [5], block_size=16)
    with pytest.raises(ValueError, match="does not match"):
        run_kernel(core, q[:, : 6 * D], kc, vc, table, [5], 6, None, torch.float32)
