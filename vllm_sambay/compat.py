"""Every difference between the supported vLLM releases (0.26 .. 0.32), in one place.

Only this module and the model/layer files import vLLM internals. Names that moved between
releases are resolved here once, at import time.
"""

from __future__ import annotations

import torch
from vllm.distributed import get_tensor_model_parallel_world_size
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
)

try:  # vLLM >= 0.30
    from vllm.model_executor.layers.attention import Attention
except ImportError:  # pragma: no cover - older layout
    from vllm.attention.layer import Attention

try:
    from vllm.model_executor.layers.mamba.mamba_utils import is_conv_state_dim_first
except ImportError:  # pragma: no cover - releases that only know the (dim, width) layout

    def is_conv_state_dim_first() -> bool:
        return True


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


def tp_world_size() -> int:
    try:
        return get_tensor_model_parallel_world_size()
    except (AssertionError, RuntimeError):  # no distributed group (unit tests)
        return 1


def mamba_states(layer) -> tuple[torch.Tensor, torch.Tensor]:
    """(conv_state, ssm_state) of a bound MambaBase layer, whatever the release stores."""
    cache = layer.kv_cache
    if not isinstance(cache[0], torch.Tensor):  # old releases: one (conv, ssm) per virtual engine
        cache = cache[0]
    return cache[0], cache[1]


def conv_state_view(conv_state: torch.Tensor) -> torch.Tensor:
    """The conv state as [slots, dim, d_conv - 1], a view of the cache whatever its layout."""
    return conv_state if is_conv_state_dim_first() else conv_state.transpose(-1, -2)
