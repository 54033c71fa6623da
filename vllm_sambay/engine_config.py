"""Checks and fixes of vLLM's engine config for ``Phi4FlashForCausalLM``, where vLLM plans the engine.

vLLM looks up a per-architecture hook in ``vllm.model_executor.models.config.MODELS_CONFIG_MAP``
while it builds ``ModelConfig`` and ``VllmConfig`` in the process the user started (``LLM(...)``,
``vllm serve``, ``sambay-serve``), before any engine-core or worker process exists.
:func:`vllm_sambay.register` puts :class:`Phi4FlashEngineConfig` there. A refusal raised here
reaches the user as the exception itself, with its message, instead of the generic "Engine core
initialization failed" that a check inside the model's constructor (in the worker) turns into.

Only facts about the engine config belong here; the model's own config rules are in
:mod:`vllm_sambay.config`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch

from .config import ARCHITECTURE, TRAINED_CONTEXT, Phi4FlashConfig, check_tensor_parallel

if TYPE_CHECKING:
    from vllm.config import ModelConfig, VllmConfig

PLUGIN = "vllm-sambay"
logger = logging.getLogger(__name__)


class Phi4FlashEngineConfig:
    """The two hook methods vLLM calls (the interface of vLLM's ``VerifyAndUpdateConfig``)."""

    @staticmethod
    def verify_and_update_model_config(model_config: ModelConfig) -> None:
        adopt_config(model_config)
        default_context_to_trained(model_config)

    @staticmethod
    def verify_and_update_config(vllm_config: VllmConfig) -> None:
        # Already ours: verify_and_update_model_config ran when vLLM built the ModelConfig.
        config: Phi4FlashConfig = vllm_config.model_config.hf_config
        if vllm_config.speculative_config is not None:
            # Speculative decoding feeds several tokens per decode row and expects the Mamba
            # layers to keep a state per draft position; the plugin's Mamba step keeps one.
            raise ValueError(
                f"Phi4FlashForCausalLM ({PLUGIN}) does not support speculative decoding; "
                "start without --speculative-config"
            )
        tp = vllm_config.parallel_config.tensor_parallel_size
        try:
            check_tensor_parallel(config.num_attention_heads, config.num_key_value_heads, tp)
        except ValueError as exc:
            raise ValueError(f"Phi4FlashForCausalLM ({PLUGIN}): {exc}") from None
        if config.mamba_d_inner % tp:
            raise ValueError(
                f"Phi4FlashForCausalLM ({PLUGIN}): tensor_parallel_size={tp} does not split SambaY's Mamba "
                f"channels (mamba_expand * hidden_size = {config.mamba_d_inner}); choose a divisor of it"
            )
        check_quantized_dtype(vllm_config)
        warn_if_untested_runner(vllm_config)


def check_quantized_dtype(vllm_config: VllmConfig) -> None:
    """A compressed-tensors weight-only int4 checkpoint (W4A16) runs on vLLM's CPU through
    ``cpu_gemm_wna16``, which has bf16 and fp16 kernels only: in float32 it would fail at the
    first forward with a NotImplementedError deep in the engine. Refused here, by name."""
    from vllm.platforms import current_platform

    model_config = vllm_config.model_config
    qc = getattr(model_config.hf_config, "quantization_config", None)
    if not current_platform.is_cpu() or not isinstance(qc, dict) or model_config.dtype != torch.float32:
        return
    if qc.get("quant_method") != "compressed-tensors":
        return
    for name, group in (qc.get("config_groups") or {}).items():
        weights, inputs = group.get("weights") or {}, group.get("input_activations")
        if weights.get("num_bits") == 4 and weights.get("type") == "int" and inputs is None:
            raise ValueError(
                f"Phi4FlashForCausalLM ({PLUGIN}): the checkpoint's int4 weight-only scheme ({name}) runs on vLLM's "
                "CPU int4 kernel, which has no float32 path; start with --dtype bfloat16"
            )


def warn_if_untested_runner(vllm_config: VllmConfig) -> None:
    """Say once, on CUDA, which parts of Model Runner V2 have not yet run this model."""
    from vllm.platforms import current_platform

    message = untested_runner_message(vllm_config, on_cuda=current_platform.is_cuda())
    if message:
        logger.warning("%s", message)


def untested_runner_message(vllm_config: VllmConfig, *, on_cuda: bool) -> str | None:
    """The warning for an engine on Model Runner V2 (MRv2) on CUDA, or None.

    MRv2 is what vLLM 0.32 and 0.33 pick on CUDA for this model by default, and the only runner
    in 0.34. The plugin needs nothing runner-specific, and its parity on MRv2 is proven on a CPU
    (vLLM 0.34's standalone CPU runner, tests/compat/test_mrv2.py); what only a GPU can show is
    MRv2's CUDA side, named in the message. Its GPU checks so far ran on the V1 runner (vLLM 0.26)."""
    from .compat import runs_model_runner_v2

    if not on_cuda or not runs_model_runner_v2(vllm_config):
        return None
    message = (
        f"{PLUGIN}: vLLM runs Phi4FlashForCausalLM on Model Runner V2. Parity with the reference is proven "
        "on CPU (vLLM 0.34's standalone runner); on CUDA this model has not yet run MRv2's Triton batch "
        "preparation and Mamba align-mode state copies, its CUDA graphs or its fast-prefill row padding "
        "(the plugin's GPU checks ran on the V1 runner)."
    )
    if hasattr(vllm_config, "use_v2_model_runner"):  # 0.26 - 0.33 still have the V1 runner
        message += " VLLM_USE_V2_MODEL_RUNNER=0 selects the V1 runner."
    return message


def adopt_config(model_config: ModelConfig) -> None:
    """Replace a foreign config object (what an ``hf_overrides`` function returns, or a config
    class another loader picked, e.g. a plain ``PretrainedConfig``) by the plugin's own, which carries
    the layer layout in ``layer_types``. It must happen before vLLM reads ``layer_types``:
    without it vLLM sets the 512-token window of the self-decoder on every attention layer."""
    hf_config = model_config.hf_config
    if isinstance(hf_config, Phi4FlashConfig):
        return
    try:
        config = Phi4FlashConfig(**hf_config.to_dict())
    except ValueError as exc:
        raise ValueError(f"{PLUGIN}: the checkpoint's config.json is not a valid SambaY config: {exc}") from exc
    model_config.hf_config = config
    model_config.hf_text_config = config


def default_context_to_trained(model_config: ModelConfig) -> None:
    """Without ``--max-model-len``, vLLM takes the config's ``max_position_embeddings`` (262144 in the
    published config.json). Default to the context the model was trained with instead; an explicit
    value is honoured up to what the config allows, with a warning past the trained context."""
    asked = model_config.original_max_model_len  # what the user gave (None: not given; -1: fit memory)
    if asked is None and model_config.max_model_len > TRAINED_CONTEXT:
        logger.info(
            "%s: max_model_len defaults to %d, the context Phi-4-mini-flash-reasoning was trained with "
            "(config.json allows %d); pass --max-model-len to choose another",
            PLUGIN,
            TRAINED_CONTEXT,
            model_config.max_model_len,
        )
        model_config.max_model_len = TRAINED_CONTEXT
    elif asked is not None and asked > TRAINED_CONTEXT:
        logger.warning(
            "%s: max_model_len %d is beyond the %d-token context the model was trained with; quality there "
            "is unvalidated",
            PLUGIN,
            asked,
            TRAINED_CONTEXT,
        )


def register_engine_config_hook() -> None:
    """Put the hook where vLLM looks for it. The map's module imports only vLLM's logger and
    math helpers, so this keeps :func:`vllm_sambay.register` cheap."""
    from vllm.model_executor.models.config import MODELS_CONFIG_MAP

    MODELS_CONFIG_MAP[ARCHITECTURE] = Phi4FlashEngineConfig
