"""Mamba-1 kernels in plain torch: the CPU path and the readable contract of the GPU kernels.

vLLM's CPU build has no Mamba-1 prefill scan, and its CPU state-update kernel implements
Mamba-2 semantics (one A/dt per head), so SambaY carries its own. Layouts follow vLLM:
tokens of all prefill sequences are packed ("varlen", split by ``query_start_loc``), states
live in cache slots addressed by ``state_indices``: conv state ``[slots, dim, d_conv - 1]``
(the last raw inputs, oldest first) and ssm state ``[slots, dim, d_state]``.
Everything is computed in float32 (or float64 if the inputs are) and cast back on write.

Two versions of each prefill op live here. The ``*_loop`` functions are the readable
definition: one sequence at a time, the scan one token at a time over tensors as long as the
prompt. The unsuffixed functions are what the model calls on CPU and compute the same numbers
with fewer, bigger torch ops and a working set bounded by a chunk of tokens, not by the prompt
(see ``selective_scan_varlen`` for how); ``tests/unit/test_mamba_ops.py`` holds them equal.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Tokens whose [L, N, D] decay and state terms are materialized at once by the scan (5.2 MB per
# term at L = 16, D = 5120, N = 16); benchmarks/mamba_scan_micro.py sweeps it.
SCAN_CHUNK_TOKENS = 16
# Tokens whose per-channel [P, D] terms (softplus(dt), dt * x, the output rows) are computed at
# once: big enough that these ops are few, small enough (5 MB at D = 5120) that memory stays flat.
SCAN_BLOCK_TOKENS = 256

_LOG2E = 1.0 / math.log(2.0)


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def causal_conv1d_varlen(
    x: torch.Tensor,  # [T, D] packed prefill tokens
    weight: torch.Tensor,  # [D, K]
    bias: torch.Tensor | None,  # [D]
    conv_state: torch.Tensor,  # [slots, D, K-1], updated in place
    state_indices: torch.Tensor,  # [B]
    has_initial_state: torch.Tensor,  # [B] bool
    query_start_loc: torch.Tensor,  # [B+1]
    metadata=None,  # vLLM's Mamba metadata; the GPU kernels use its precomputed launch data
) -> torch.Tensor:
    """Depthwise causal conv + SiLU of all sequences at once (same result as the loop below).

    Every sequence is prefixed by its K-1 previous inputs (cached state or zeros) in one packed
    ``[T + B*(K-1), D]`` buffer, so a sequence's window never reaches into its neighbour; the conv
    is then K multiply-adds of shifted token-major slices (no transposes, no per-sequence ops),
    and the new state is each sequence's last K-1 entries of that buffer. All states are read
    before any is written, which matches the loop as long as the batch's slots are distinct (as
    vLLM's are).
    """
    ct = _compute_dtype(x)
    k = weight.shape[1]
    nb = state_indices.shape[0]
    if nb == 0:
        return torch.empty(x.shape, dtype=x.dtype, device=x.device)
    dev = x.device
    qsl = query_start_loc.to(device=dev, dtype=torch.long)
    lens = qsl[1:] - qsl[:-1]
    slots = state_indices.to(device=dev, dtype=torch.long)
    pad = k - 1
    # Row of each token and each prefix entry in the padded buffer: sequence i is shifted by (i+1)*pad.
    seq_of_token = torch.repeat_interleave(torch.arange(nb, device=dev), lens, output_size=x.shape[0])
    token_rows = torch.arange(x.shape[0], device=dev) + (seq_of_token + 1) * pad
    seq_starts = qsl[:-1] + torch.arange(nb, device=dev) * pad  # first prefix row of each sequence
    prefix_rows = seq_starts[:, None] + torch.arange(pad, device=dev)  # [B, K-1]
    buf = torch.empty(x.shape[0] + nb * pad, x.shape[1], dtype=ct, device=dev)
    buf.index_copy_(0, token_rows, x.to(ct))
    prev = conv_state[slots].to(ct).transpose(1, 2)  # [B, K-1, D], oldest first
    carried = has_initial_state.to(device=dev, dtype=torch.bool)[:, None, None]
    prev = torch.where(carried, prev, 0.0)  # where, not a product: an unused slot may hold NaN
    buf.index_copy_(0, prefix_rows.reshape(-1), prev.reshape(-1, x.shape[1]))
    # y[r - pad] = bias + sum_j w[:, j] * buf[r - pad + j] for every buffer row r >= pad.
    w = weight.to(ct)
    rows = buf.shape[0] - pad
    y = buf[0:rows] * w[:, 0]
    for j in range(1, k):
        y.addcmul_(buf[j : j + rows], w[:, j])
    if bias is not None:
        y += bias.to(ct)
    out = F.silu(y.index_select(0, token_rows - pad), inplace=True)
    ends = seq_starts + lens + pad  # one past each sequence's last row
    new_state = buf.index_select(0, (ends[:, None] - pad + torch.arange(pad, device=dev)).reshape(-1))
    conv_state[slots] = new_state.view(nb, pad, -1).transpose(1, 2).to(conv_state.dtype)
    return out.to(x.dtype)


def causal_conv1d_varlen_loop(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    conv_state: torch.Tensor,
    state_indices: torch.Tensor,
    has_initial_state: torch.Tensor,
    query_start_loc: torch.Tensor,
    metadata=None,
) -> torch.Tensor:
    """Depthwise causal conv + SiLU per sequence, continuing from and updating the cache."""
    ct = _compute_dtype(x)
    k = weight.shape[1]
    w = weight.to(ct).unsqueeze(1)  # [D, 1, K]
    b = None if bias is None else bias.to(ct)
    out = torch.empty(x.shape, dtype=ct, device=x.device)
    qsl = query_start_loc.tolist()
    for i, slot in enumerate(state_indices.tolist()):
        s, e = qsl[i], qsl[i + 1]
        seq = x[s:e].to(ct).t()  # [D, L]
        if bool(has_initial_state[i]):
            prev = conv_state[slot].to(ct)
        else:
            prev = seq.new_zeros(seq.shape[0], k - 1)
        full = torch.cat([prev, seq], dim=1)  # [D, K-1+L]
        y = F.conv1d(full.unsqueeze(0), w, b, groups=full.shape[0]).squeeze(0)  # [D, L]
        out[s:e] = F.silu(y).t()
        conv_state[slot] = full[:, -(k - 1) :].to(conv_state.dtype)
    return out.to(x.dtype)


def causal_conv1d_step(
    x: torch.Tensor,  # [B, D] one token per sequence
    weight: torch.Tensor,  # [D, K]
    bias: torch.Tensor | None,
    conv_state: torch.Tensor,  # [slots, D, K-1], updated in place
    state_indices: torch.Tensor,  # [B]
) -> torch.Tensor:
    ct = _compute_dtype(x)
    idx = state_indices.long()
    window = torch.cat([conv_state[idx].to(ct), x.to(ct).unsqueeze(-1)], dim=-1)  # [B, D, K]
    y = (window * weight.to(ct)).sum(-1)
    if bias is not None:
        y = y + bias.to(ct)
    conv_state[idx] = window[..., 1:].to(conv_state.dtype)
    return F.silu(y).to(x.dtype)


def _discretize(dt: torch.Tensor, dt_bias: torch.Tensor | None, ct: torch.dtype) -> torch.Tensor:
    dt = dt.to(ct)
    if dt_bias is not None:
        dt = dt + dt_bias.to(ct)
    return F.softplus(dt)


def selective_scan_varlen(
    x: torch.Tensor,  # [T, D] (conv output)
    dt: torch.Tensor,  # [T, D] before bias and softplus
    A: torch.Tensor,  # [D, N] (already -exp(A_log))
    B: torch.Tensor,  # [T, N]
    C: torch.Tensor,  # [T, N]
    D: torch.Tensor,  # [D]
    z: torch.Tensor | None,  # [T, D] gate, or None for the ungated output (SambaY memory)
    dt_bias: torch.Tensor | None,  # [D]
    ssm_state: torch.Tensor,  # [slots, D, N], updated in place
    state_indices: torch.Tensor,
    has_initial_state: torch.Tensor,
    query_start_loc: torch.Tensor,
    metadata=None,
) -> torch.Tensor:
    """The scan of ``selective_scan_varlen_loop`` over the packed tokens of all sequences at once.

    The recurrence h_t = a_t * h_{t-1} + u_t (a_t = exp(dt_t A), u_t = dt_t x_t B_t) runs along
    the packed token axis as one sequence; at a sequence's first token the previous state is that
    sequence's cached one (or none), so sequences never mix and one pass serves the whole batch.
    Per token this is a single in-place multiply-add; everything else is batched over a chunk of
    SCAN_CHUNK_TOKENS tokens (a, u, and y_t = C_t . h_t as one batched product) or a block of
    SCAN_BLOCK_TOKENS (softplus, D*x, the gate). Choices, measured on 2 cores (see
    benchmarks/mamba_scan_micro.py):

    * exactly the loop's arithmetic: one exp and one multiply-add per token and state element. A
      chunked closed form would need the decay between every token pair of a chunk, (L+1)/2 times
      more exps, and exp is already the largest single cost;
    * states are held as [N, D] (D innermost) so that each chunk op runs over 5120 contiguous
      floats instead of 16, which made the chunk ops and the C_t . h_t product about 1.3x faster;
      a state is transposed only where a sequence starts from or ends in its cache slot;
    * exp(dt A) is evaluated as exp2(dt * (A log2 e)): torch's float32 exp2 is about 3x faster
      than its exp on AVX-512, and the argument is never positive, so nothing can overflow;
    * one op per token means one thread synchronisation per token: fine-grained parallel ops are
      what suffers most when other processes share the cores;
    * the only buffers besides the output are three [SCAN_CHUNK_TOKENS, N, D] terms and the
      [SCAN_BLOCK_TOKENS, D] rows (about 20 MB at D = 5120), whatever the number of tokens.
    """
    ct = _compute_dtype(x)
    n_tok, dim = x.shape
    n_state = A.shape[1]
    chunk, block = SCAN_CHUNK_TOKENS, SCAN_BLOCK_TOKENS
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    qsl = query_start_loc.tolist()
    carried = [bool(v) for v in has_initial_state.tolist()]
    start_slot: dict[int, int | None] = {}  # first token -> slot whose state it continues (None: zeros)
    end_slot: dict[int, int] = {}  # last token -> slot that receives the final state
    for i, slot in enumerate(state_indices.tolist()):
        s, e = qsl[i], qsl[i + 1]
        if e > s:
            start_slot[s] = slot if carried[i] else None
            end_slot[e - 1] = slot
        elif not carried[i]:  # an empty sequence from zeros ends in the zero state, like the loop
            ssm_state[slot].zero_()
    if n_tok == 0:
        return out
    A2 = (A.to(ct) * _LOG2E).t().contiguous()  # [N, D]
    D_ = D.to(ct)
    decay = torch.empty(chunk, n_state, dim, dtype=ct, device=x.device)
    # Two state buffers, alternating per chunk: the last state of one chunk stays valid while the
    # next chunk is filled, so it needs no copy.
    states = (torch.empty_like(decay), torch.empty_like(decay))
    y = torch.empty(block, dim, dtype=ct, device=x.device)
    h_prev = None
    n_chunks = 0
    for b0 in range(0, n_tok, block):
        b1 = min(b0 + block, n_tok)
        xs = x[b0:b1].to(ct)
        delta = _discretize(dt[b0:b1], dt_bias, ct)  # [P, D]
        dx = delta * xs
        Bs, Cs = B[b0:b1].to(ct), C[b0:b1].to(ct)
        for c0 in range(0, b1 - b0, chunk):
            c1 = min(c0 + chunk, b1 - b0)
            a = decay[: c1 - c0]
            h = states[n_chunks % 2][: c1 - c0]
            n_chunks += 1
            torch.mul(delta[c0:c1, None, :], A2, out=a)
            torch.exp2(a, out=a)
            torch.mul(dx[c0:c1, None, :], Bs[c0:c1, :, None], out=h)  # u_t, becomes h_t below
            for j, (a_j, h_j) in enumerate(zip(a.unbind(0), h.unbind(0), strict=True)):
                t = b0 + c0 + j
                if t in start_slot:
                    slot = start_slot[t]
                    if slot is not None:
                        h_j.addcmul_(a_j, ssm_state[slot].t().to(ct))
                else:
                    h_j.addcmul_(a_j, h_prev)
                if t in end_slot:
                    ssm_state[end_slot[t]].copy_(h_j.t())
                h_prev = h_j
            torch.bmm(Cs[c0:c1, None, :], h, out=y[c0:c1, None, :])  # y_t = C_t . h_t
        yb = y[: b1 - b0]
        yb.addcmul_(xs, D_)
        if z is not None:
            yb.mul_(F.silu(z[b0:b1].to(ct)))
        out[b0:b1] = yb
    return out


def selective_scan_varlen_loop(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    z: torch.Tensor | None,
    dt_bias: torch.Tensor | None,
    ssm_state: torch.Tensor,
    state_indices: torch.Tensor,
    has_initial_state: torch.Tensor,
    query_start_loc: torch.Tensor,
    metadata=None,
) -> torch.Tensor:
    """y_t = C_t . h_t + D x_t with h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t; y * silu(z) if z.

    The definition, one sequence and one token at a time; it holds two [L, D, N] float32 terms
    per sequence (2.7 GB each at L = 8192, D = 5120), so the model uses the chunked version."""
    ct = _compute_dtype(x)
    A_ = A.to(ct)
    D_ = D.to(ct)
    xs, Bs, Cs = x.to(ct), B.to(ct), C.to(ct)
    delta = _discretize(dt, dt_bias, ct)
    out = torch.empty(x.shape, dtype=ct, device=x.device)
    qsl = query_start_loc.tolist()
    for i, slot in enumerate(state_indices.tolist()):
        s, e = qsl[i], qsl[i + 1]
        if bool(has_initial_state[i]):
            h = ssm_state[slot].to(ct)
        else:
            h = x.new_zeros(A_.shape, dtype=ct)
        dA = torch.exp(delta[s:e].unsqueeze(-1) * A_)  # [L, D, N]
        dBx = delta[s:e].unsqueeze(-1) * Bs[s:e].unsqueeze(1) * xs[s:e].unsqueeze(-1)  # [L, D, N]
        for t in range(e - s):
            h = dA[t] * h + dBx[t]
            out[s + t] = h @ Cs[s + t]
        ssm_state[slot] = h.to(ssm_state.dtype)
    out = out + xs * D_
    if z is not None:
        out = out * F.silu(z.to(ct))
    return out.to(x.dtype)


def selective_state_step(
    ssm_state: torch.Tensor,  # [slots, D, N], updated in place
    x: torch.Tensor,  # [B, D]
    dt: torch.Tensor,  # [B, D]
    A: torch.Tensor,
    B: torch.Tensor,  # [B, N]
    C: torch.Tensor,  # [B, N]
    D: torch.Tensor,
    z: torch.Tensor | None,
    dt_bias: torch.Tensor | None,
    state_indices: torch.Tensor,
) -> torch.Tensor:
    ct = _compute_dtype(x)
    idx = state_indices.long()
    delta = _discretize(dt, dt_bias, ct)  # [B, D]
    h = ssm_state[idx].to(ct)  # [B, D, N]
    h = torch.exp(delta.unsqueeze(-1) * A.to(ct)) * h + (
        delta.unsqueeze(-1) * B.to(ct).unsqueeze(1) * x.to(ct).unsqueeze(-1)
    )
    ssm_state[idx] = h.to(ssm_state.dtype)
    y = torch.einsum("bdn,bn->bd", h, C.to(ct)) + x.to(ct) * D.to(ct)
    if z is not None:
        y = y * F.silu(z.to(ct))
    return y.to(x.dtype)
