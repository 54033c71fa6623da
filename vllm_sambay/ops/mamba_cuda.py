"""Mamba-1 on CUDA through vLLM's kernels, with the contract of ``mamba_torch``.

vLLM's kernels are channel-first ([dim, tokens]); these wrappers transpose views only.
``selective_scan_fn`` with ``z=None`` returns the ungated scan output that SambaY's memory
layer exports.
"""

from __future__ import annotations

import torch
from vllm.model_executor.layers.mamba.ops.causal_conv1d import causal_conv1d_fn, causal_conv1d_update
from vllm.model_executor.layers.mamba.ops.mamba_ssm import selective_scan_fn
from vllm.model_executor.layers.mamba.ops.ssu_dispatch import selective_state_update
from vllm.v1.attention.backends.mamba1_attn import Mamba1AttentionMetadata


def causal_conv1d_varlen(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    conv_state: torch.Tensor,
    state_indices: torch.Tensor,
    has_initial_state: torch.Tensor,
    query_start_loc: torch.Tensor,
    metadata: Mamba1AttentionMetadata | None = None,
) -> torch.Tensor:
    out = causal_conv1d_fn(
        x.t(),
        weight,
        bias,
        activation="silu",
        conv_states=conv_state,
        has_initial_state=has_initial_state,
        cache_indices=state_indices,
        query_start_loc=query_start_loc,
        metadata=metadata,
    )
    return out.t()


def causal_conv1d_step(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    conv_state: torch.Tensor,
    state_indices: torch.Tensor,
) -> torch.Tensor:
    return causal_conv1d_update(x, conv_state, weight, bias, "silu", conv_state_indices=state_indices)


def selective_scan_varlen(
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
    metadata: Mamba1AttentionMetadata | None = None,
) -> torch.Tensor:
    return selective_scan_fn(
        x.t(),
        ssm_state,
        dt.t(),
        A,
        B.t(),
        C.t(),
        D.float(),
        None if z is None else z.t(),
        None if dt_bias is None else dt_bias.float(),
        delta_softplus=True,
        cache_indices=state_indices,
        has_initial_state=has_initial_state,
        query_start_loc=query_start_loc,
        cu_chunk_seqlen=None if metadata is None else metadata.cu_chunk_seqlen_p,
        last_chunk_indices=None if metadata is None else metadata.last_chunk_indices_p,
    ).t()


def selective_state_step(
    ssm_state: torch.Tensor,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    z: torch.Tensor | None,
    dt_bias: torch.Tensor | None,
    state_indices: torch.Tensor,
) -> torch.Tensor:
    out = torch.empty_like(x)
    selective_state_update(
        ssm_state,
        x,
        dt,
        A,
        B,
        C,
        D,
        z=z,
        dt_bias=None if dt_bias is None else dt_bias.float(),
        dt_softplus=True,
        state_batch_indices=state_indices,
        dst_state_batch_indices=state_indices,
        out=out,
    )
    return out
