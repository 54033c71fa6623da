"""Mamba-1 kernels in plain torch: the CPU path and the readable contract of the GPU kernels.

vLLM's CPU build has no Mamba-1 prefill scan, and its CPU state-update kernel implements
Mamba-2 semantics (one A/dt per head), so SambaY carries its own. Layouts follow vLLM:
tokens of all prefill sequences are packed ("varlen", split by ``query_start_loc``), states
live in cache slots addressed by ``state_indices``: conv state ``[slots, dim, d_conv - 1]``
(the last raw inputs, oldest first) and ssm state ``[slots, dim, d_state]``.
Everything is computed in float32 (or float64 if the inputs are) and cast back on write.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
        conv_state[slot] = full[:, -(k - 1):].to(conv_state.dtype)
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
    """y_t = C_t . h_t + D x_t with h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t; y * silu(z) if z."""
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
