"""The CPU Mamba-1 kernels: packed prefill (with and without carried state) equals token-by-token
decoding, and a prompt split into chunks equals the prompt in one piece."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vllm_sambay.ops import mamba_torch as ops

D, N, K = 12, 4, 4


def params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(
        weight=torch.randn(D, K, generator=g, dtype=torch.float64),
        bias=torch.randn(D, generator=g, dtype=torch.float64),
        A=-torch.rand(D, N, generator=g, dtype=torch.float64) - 0.1,
        Dskip=torch.randn(D, generator=g, dtype=torch.float64),
        dt_bias=torch.randn(D, generator=g, dtype=torch.float64) * 0.1,
    )


def inputs(t, seed=1):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    return r(t, D), r(t, D) * 0.5, r(t, N), r(t, N), r(t, D)


def naive(x, dt, B, C, z, p, gated):
    """Direct formulas, one sequence from zero state."""
    xp = torch.cat([torch.zeros(K - 1, D, dtype=x.dtype), x])
    xc = torch.stack([F.silu((xp[t : t + K].t() * p["weight"]).sum(-1) + p["bias"]) for t in range(len(x))])
    delta = F.softplus(dt + p["dt_bias"])
    h = torch.zeros(D, N, dtype=x.dtype)
    ys = []
    for t in range(len(x)):
        h = torch.exp(delta[t, :, None] * p["A"]) * h + delta[t, :, None] * B[t] * xc[t, :, None]
        y = h @ C[t] + p["Dskip"] * xc[t]
        ys.append(y * F.silu(z[t]) if gated else y)
    return torch.stack(ys)


def run_chunks(x, dt, B, C, z, p, splits, gated, slot=2, slots=4):
    conv = torch.zeros(slots, D, K - 1, dtype=x.dtype)
    ssm = torch.zeros(slots, D, N, dtype=x.dtype)
    idx = torch.tensor([slot])
    outs, start = [], 0
    for n in splits:
        s = slice(start, start + n)
        qsl = torch.tensor([0, n])
        has_init = torch.tensor([start > 0])
        if n == 1 and start > 0:  # a decode step
            xc = ops.causal_conv1d_step(x[s], p["weight"], p["bias"], conv, idx)
            y = ops.selective_state_step(
                ssm, xc, dt[s], p["A"], B[s], C[s], p["Dskip"], z[s] if gated else None, p["dt_bias"], idx
            )
        else:
            xc = ops.causal_conv1d_varlen(x[s], p["weight"], p["bias"], conv, idx, has_init, qsl)
            y = ops.selective_scan_varlen(
                xc,
                dt[s],
                p["A"],
                B[s],
                C[s],
                p["Dskip"],
                z[s] if gated else None,
                p["dt_bias"],
                ssm,
                idx,
                has_init,
                qsl,
            )
        outs.append(y)
        start += n
    return torch.cat(outs)


@pytest.mark.parametrize("gated", [True, False], ids=["gated", "ungated-memory"])
@pytest.mark.parametrize("splits", [[9], [2, 7], [3, 1, 1, 1, 3], [1, 1, 1, 1, 1, 1, 1, 1, 1]])
def test_chunked_and_stepwise_equal_the_formula(gated, splits):
    p = params()
    x, dt, B, C, z = inputs(sum(splits))
    expected = naive(x, dt, B, C, z, p, gated)
    got = run_chunks(x, dt, B, C, z, p, splits, gated)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_packed_sequences_use_their_own_slots_and_reset_without_initial_state():
    p = params()
    seqs = [inputs(n, seed=10 + n) for n in (5, 2, 8)]
    conv = torch.randn(6, D, K - 1, dtype=torch.float64)  # garbage that must be ignored
    ssm = torch.randn(6, D, N, dtype=torch.float64)
    idx = torch.tensor([4, 0, 5])
    qsl = torch.tensor([0, 5, 7, 15])
    cat = [torch.cat([s[i] for s in seqs]) for i in range(5)]
    x, dt, B, C, z = cat
    has_init = torch.tensor([False, False, False])
    xc = ops.causal_conv1d_varlen(x, p["weight"], p["bias"], conv, idx, has_init, qsl)
    y = ops.selective_scan_varlen(xc, dt, p["A"], B, C, p["Dskip"], z, p["dt_bias"], ssm, idx, has_init, qsl)
    for (s, e), seq in zip([(0, 5), (5, 7), (7, 15)], seqs, strict=True):
        torch.testing.assert_close(y[s:e], naive(*seq, p, True), rtol=1e-10, atol=1e-10)
    # the conv state keeps the last K-1 raw inputs of each sequence, oldest first
    torch.testing.assert_close(conv[5], seqs[2][0][-(K - 1) :].t())
    # a 2-token sequence leaves a zero-padded conv state
    torch.testing.assert_close(conv[0][:, 0], torch.zeros(D, dtype=torch.float64))


# ---- the chunked CPU scan and the batched conv against the per-token / per-sequence definitions ----

WIDE, STATE = 48, 16  # channels and state size of the tests below (the model's N, a narrow D)


def wide_params(seed=3):
    """Float64 parameters whose dt*A reaches -1e3 in a third of the channels (exp2 underflows to 0)."""
    g = torch.Generator().manual_seed(seed)
    a_log = torch.rand(WIDE, STATE, generator=g, dtype=torch.float64) * 2.0
    a_log[::3] += 4.0  # |A| up to e^6 ~ 400
    return dict(
        A=-torch.exp(a_log),
        Dskip=torch.randn(WIDE, generator=g, dtype=torch.float64),
        dt_bias=torch.randn(WIDE, generator=g, dtype=torch.float64) * 0.1,
        weight=torch.randn(WIDE, K, generator=g, dtype=torch.float64),
        bias=torch.randn(WIDE, generator=g, dtype=torch.float64),
    )


def wide_batch(lens, seed=4):
    g = torch.Generator().manual_seed(seed)
    t = sum(lens)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    dt = r(t, WIDE)
    dt[:, ::3] += 2.0  # softplus(dt) ~ 2..4 on the strongly decaying channels
    qsl = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()])
    return dict(x=r(t, WIDE), dt=dt, B=r(t, STATE), C=r(t, STATE), z=r(t, WIDE), qsl=qsl)


def scan_call(fn, b, p, ssm, idx, has_init, gated, dtype):
    cast = lambda v: v.to(dtype)  # noqa: E731
    return fn(
        cast(b["x"]),
        cast(b["dt"]),
        cast(p["A"]),
        cast(b["B"]),
        cast(b["C"]),
        cast(p["Dskip"]),
        cast(b["z"]) if gated else None,
        cast(p["dt_bias"]),
        ssm,
        idx,
        has_init,
        b["qsl"],
    )


def row_relative_error(got: torch.Tensor, ref: torch.Tensor) -> float:
    """Worst row of max|got - ref| / max|ref| (rows: tokens or state slots)."""
    got, ref = got.double().flatten(1), ref.double().flatten(1)
    return ((got - ref).abs().amax(1) / ref.abs().amax(1)).max().item()


# 1 token, shorter than the conv window, exactly one chunk, one past it, several chunks and blocks.
MIXED = [1, 2, 8, 9, 1, 37, 3, 70]


@pytest.fixture(params=[(8, 256), (8, 16), (3, 10)], ids=["chunk8-block256", "chunk8-block16", "chunk3-block10"])
def scan_sizes(request, monkeypatch):
    """The chunk and block lengths are module constants read at each call; small ones put chunk
    and block boundaries inside these short sequences."""
    chunk, block = request.param
    monkeypatch.setattr(ops, "SCAN_CHUNK_TOKENS", chunk)
    monkeypatch.setattr(ops, "SCAN_BLOCK_TOKENS", block)
    return request.param


@pytest.mark.parametrize("gated", [True, False], ids=["gated", "ungated-memory"])
@pytest.mark.parametrize("carried", ["none", "some", "all"])
def test_float32_scan_matches_float64_loop_on_a_mixed_batch(scan_sizes, gated, carried):
    p, b = wide_params(), wide_batch(MIXED)
    nb = len(MIXED)
    has_init = torch.tensor([carried == "all" or (carried == "some" and i % 2 == 0) for i in range(nb)])
    idx = torch.arange(nb).flip(0) * 2 + 1  # slots 15, 13, ..., 1 of 17; the even slots are bystanders
    state64 = torch.randn(2 * nb + 1, WIDE, STATE, dtype=torch.float64)
    state32 = state64.float()
    ref = scan_call(ops.selective_scan_varlen_loop, b, p, state64, idx, has_init, gated, torch.float64)
    got = scan_call(ops.selective_scan_varlen, b, p, state32, idx, has_init, gated, torch.float32)
    assert got.dtype == torch.float32
    assert row_relative_error(got, ref) <= 1e-5
    assert row_relative_error(state32[idx], state64[idx]) <= 1e-5
    assert torch.isfinite(got).all()


def test_float64_scan_equals_the_float64_loop(scan_sizes):
    """Float64 inputs are computed in float64 (the float32 path would be ~1e-7 off)."""
    p, b = wide_params(), wide_batch(MIXED)
    idx, has_init = torch.arange(len(MIXED)), torch.tensor([i % 3 == 0 for i in range(len(MIXED))])
    s_ref = torch.randn(len(MIXED), WIDE, STATE, dtype=torch.float64)
    s_got = s_ref.clone()
    ref = scan_call(ops.selective_scan_varlen_loop, b, p, s_ref, idx, has_init, True, torch.float64)
    got = scan_call(ops.selective_scan_varlen, b, p, s_got, idx, has_init, True, torch.float64)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s_got, s_ref, rtol=1e-12, atol=1e-12)


def test_scan_writes_states_in_place_into_its_slots_only(scan_sizes):
    p, b = wide_params(), wide_batch(MIXED)
    nb = len(MIXED)
    idx = torch.tensor([9, 2, 7, 0, 4, 11, 5, 1])
    has_init = torch.tensor([True, False, True, False, False, True, True, False])
    state = torch.randn(12, WIDE, STATE, dtype=torch.float64).float()
    state[idx[~has_init]] = float("nan")  # a slot without initial state must never be read
    before, ptr = state.clone(), state.data_ptr()
    ref_state = before.double().nan_to_num(0.0)
    ref = scan_call(ops.selective_scan_varlen_loop, b, p, ref_state, idx, has_init, False, torch.float64)
    got = scan_call(ops.selective_scan_varlen, b, p, state, idx, has_init, False, torch.float32)
    assert state.data_ptr() == ptr
    assert torch.isfinite(got).all() and row_relative_error(got, ref) <= 1e-5
    assert row_relative_error(state[idx], ref_state[idx]) <= 1e-5
    others = sorted(set(range(12)) - set(idx.tolist()))
    assert others == [3, 6, 8, 10] and len(idx) == nb
    torch.testing.assert_close(state[others], before[others], rtol=0, atol=0)


def test_batched_conv_equals_the_per_sequence_loop():
    p, b = wide_params(), wide_batch(MIXED)
    nb = len(MIXED)
    idx = torch.tensor([9, 2, 7, 0, 4, 11, 5, 1])
    has_init = torch.tensor([True, True, False, False, True, True, False, True])  # 1- and 2-token carried
    conv = torch.randn(12, WIDE, K - 1, dtype=torch.float64)
    conv[idx[~has_init]] = float("nan")  # never read
    conv_ref = conv.nan_to_num(0.0)
    before, ptr = conv.clone(), conv.data_ptr()
    args = (p["weight"], p["bias"])
    ref = ops.causal_conv1d_varlen_loop(b["x"], *args, conv_ref, idx, has_init, b["qsl"])
    got = ops.causal_conv1d_varlen(b["x"], *args, conv, idx, has_init, b["qsl"])
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    assert conv.data_ptr() == ptr and len(idx) == nb
    torch.testing.assert_close(conv[idx], conv_ref[idx], rtol=0, atol=0)
    others = [3, 6, 8, 10]
    torch.testing.assert_close(conv[others], before[others], rtol=0, atol=0)
    got32 = ops.causal_conv1d_varlen(b["x"].float(), *args, before.float(), idx, has_init, b["qsl"])
    assert got32.dtype == torch.float32 and row_relative_error(got32, ref) <= 1e-5
