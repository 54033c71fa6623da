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
                xc, dt[s], p["A"], B[s], C[s], p["Dskip"], z[s] if gated else None, p["dt_bias"], ssm, idx,
                has_init, qsl,
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
    torch.testing.assert_close(conv[5], seqs[2][0][-(K - 1):].t())
    # a 2-token sequence leaves a zero-padded conv state
    torch.testing.assert_close(conv[0][:, 0], torch.zeros(D, dtype=torch.float64))
