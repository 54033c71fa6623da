"""The one dispatch point for Mamba-1 kernels: torch on CPU, vLLM's CUDA kernels on GPU.

Both implementations share one contract (token-major tensors, states updated in place in
their cache slots); ``mamba_torch`` is its readable definition.
"""

from __future__ import annotations

import os
from types import ModuleType

import torch

from . import mamba_torch


def mamba_ops(device: torch.device) -> ModuleType:
    """``SAMBAY_MAMBA_OPS=torch`` forces the torch path on GPU too (a debugging aid)."""
    choice = os.environ.get("SAMBAY_MAMBA_OPS", "auto")
    if device.type == "cuda" and choice != "torch":
        from . import mamba_cuda

        return mamba_cuda
    return mamba_torch
