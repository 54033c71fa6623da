"""Gated memory unit: the cross-decoder's stateless stand-in for a Mamba layer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from vllm.model_executor.layers.linear import ColumnParallelLinear, RowParallelLinear
from vllm.model_executor.layers.quantization import QuantizationConfig

from ..config import Phi4FlashConfig


class GatedMemoryUnit(nn.Module):
    """y = out_proj(memory * silu(in_proj(h))), memory = layer N/2's ungated scan output for
    the same token (sharded over tensor-parallel ranks like the Mamba channels)."""

    def __init__(
        self, config: Phi4FlashConfig, *, quant_config: QuantizationConfig | None = None, prefix: str = ""
    ) -> None:
        super().__init__()
        self.in_proj = ColumnParallelLinear(
            config.hidden_size,
            config.mamba_d_inner,
            bias=False,
            quant_config=quant_config,
            prefix=f"{prefix}.in_proj",
        )
        self.out_proj = RowParallelLinear(
            config.mamba_d_inner,
            config.hidden_size,
            bias=False,
            quant_config=quant_config,
            prefix=f"{prefix}.out_proj",
        )

    def forward(self, hidden_states: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        gate, _ = self.in_proj(hidden_states)
        out, _ = self.out_proj(memory * F.silu(gate))
        return out
