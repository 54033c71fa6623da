"""The one place that picks the Mamba-1 kernels: torch on CPU, vLLM's CUDA kernels on GPU.

Both implementations share one contract (token-major tensors, states updated in place in their
cache slots); ``mamba_torch`` is its readable definition. Each Mamba layer resolves its module
once, when it is built, so nothing on the forward path reads the environment or imports.

``SAMBAY_MAMBA_OPS`` (read at layer construction):
  ``auto`` (default)  CUDA kernels when vLLM runs on a CUDA platform, the torch ops otherwise;
  ``torch``           the torch ops everywhere (a debugging aid: slow on a GPU, exact contract);
  ``cuda``            vLLM's CUDA kernels, refused on a platform without CUDA.
"""

from __future__ import annotations

import logging
import os
from types import ModuleType

ENV = "SAMBAY_MAMBA_OPS"
CHOICES = ("auto", "torch", "cuda")

logger = logging.getLogger(__name__)
_logged: set[str] = set()


def select_mamba_ops(platform_is_cuda: bool, choice: str | None = None) -> ModuleType:
    """The kernel module for this process; logs the choice once."""
    choice = (os.environ.get(ENV, "auto") if choice is None else choice).strip().lower() or "auto"
    if choice not in CHOICES:
        raise ValueError(f"{ENV}={choice!r}: expected one of {', '.join(CHOICES)}")
    if choice == "cuda" and not platform_is_cuda:
        raise ValueError(f"{ENV}=cuda but vLLM is not running on a CUDA platform; use auto or torch")
    use_cuda = choice == "cuda" or (choice == "auto" and platform_is_cuda)
    if use_cuda:
        from . import mamba_cuda as ops
    else:
        from . import mamba_torch as ops
    name = ops.__name__.rsplit(".", 1)[-1]
    if name not in _logged:
        _logged.add(name)
        logger.info("vllm-sambay: Mamba-1 kernels from %s (%s=%s)", name, ENV, choice)
    return ops
