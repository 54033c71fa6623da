"""vLLM plugin for SambaY (Phi-4-mini-flash-reasoning, ``Phi4FlashForCausalLM``).

vLLM calls :func:`register` in every process it starts (entry point group
``vllm.general_plugins``). It must stay cheap and idempotent: the model class is registered as a
lazy ``"module:Class"`` string, so no model, layer or kernel module is imported here.
"""

from __future__ import annotations

from .config import ARCHITECTURE, MODEL_TYPE, Phi4FlashConfig

__all__ = ["Phi4FlashConfig", "register", "register_config"]
__version__ = "0.1.0"

MODEL_CLASS = "vllm_sambay.model:Phi4FlashForCausalLM"
REASONING_PARSER = "phi4_flash"  # --reasoning-parser name
REASONING_PARSER_CLASS = "vllm_sambay.reasoning:Phi4FlashReasoningParser"


def register_config() -> None:
    """Let ``AutoConfig`` load ``model_type: phi4flash`` without trust_remote_code."""
    from transformers import AutoConfig

    AutoConfig.register(MODEL_TYPE, Phi4FlashConfig, exist_ok=True)


def register() -> None:
    """vLLM general-plugin entry point: config class, engine-config hook, model, reasoning parser,
    and the vLLM patches the platform and release need (``vllm_sambay.patches``)."""
    register_config()
    try:
        from vllm import ModelRegistry
    except ImportError:  # the reference and the tiny factory work without vLLM
        return
    from .engine_config import register_engine_config_hook

    register_engine_config_hook()
    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCHITECTURE, MODEL_CLASS)
    register_reasoning_parser()
    load_tokenizer_json_as_is()
    apply_patches()


def load_tokenizer_json_as_is() -> None:
    """Serve the published tokenizer.json as written, not rebuilt as GPT-2's tokenizer.

    The published tokenizer_config.json names ``GPT2Tokenizer``; transformers 5 then rebuilds the
    tokenizer from the file's vocab and merges with GPT-2's pre-tokenizer, dropping the o200k split
    pattern the model was trained with (contractions, newline runs and punctuation such as the
    ``>\n\n`` that follows ``</think>`` come out as other tokens). vLLM keeps a list of model types
    whose hub tokenizer class is wrong and loads their tokenizer.json as is; the model type goes on it.
    """
    from vllm.tokenizers import registry

    registry._MODEL_TYPES_WITH_INCORRECT_TOKENIZER_CLASS.add(MODEL_TYPE)


def apply_patches() -> None:
    """Fixes of vLLM bugs, each gated by platform and release and with its own opt-out.

    ``cpu_seed_rewind`` (CPU only, ``VLLM_SAMBAY_CPU_SEED_REWIND=0`` to opt out) imports vLLM's
    runner module; on the CPU platform that costs the front-end process ~0.8 s and ~26 MB once."""
    from .patches import cpu_seed_rewind

    cpu_seed_rewind.apply()


def register_reasoning_parser() -> None:
    """``--reasoning-parser phi4_flash`` for ``vllm serve`` and sambay-serve, imported only when chosen."""
    from vllm.reasoning import ReasoningParserManager

    module, cls = REASONING_PARSER_CLASS.split(":")
    # register_lazy_module exists in every supported release (0.26 .. 0.34).
    ReasoningParserManager.register_lazy_module(name=REASONING_PARSER, module_path=module, class_name=cls)


register_config()
