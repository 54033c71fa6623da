"""The one dispatch point for Mamba-1 kernels: torch on CPU, vLLM's CUDA kernels on GPU.

Both implementations share one contract (token-major tensors, states updated in place in
their cache slots); ``mamba_torch`` is its readable definition.
"""

from __future__ import annotations

from types import ModuleType

import torch

from . import mamba_torch


def mamba_ops(device: torch.device) -> ModuleType:
    if device.type == "cuda":
        from . import mamba_cuda

        return mamba_cuda
    return mamba_torch
