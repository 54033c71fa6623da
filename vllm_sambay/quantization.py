"""Which SambaY layers take a quantization config, which stay in the model dtype, and why.

Quantized (every matrix product that moves real bytes per decode step; with vLLM's kernels for
the scheme: compressed-tensors W8A8-int8 / W4A16 on CPU, FP8 online on GPU):
- ``mlp.fc1`` / ``mlp.fc2`` (75 % of the weights), attention ``Wqkv`` / ``out_proj``, GMU
  ``in_proj`` / ``out_proj``;
- Mamba ``in_proj`` / ``out_proj`` (vLLM's ``MambaMixer`` builds them without a quantization
  config; :class:`vllm_sambay.layers.mamba.SambaYMamba` rebuilds them with one);
- ``lm_head`` when the checkpoint stores it untied (``tie_word_embeddings: false``; the recipe in
  :mod:`vllm_sambay.quantize` writes it so): at 200064 x 2560 it is 13 % of a bf16 decode step.

Kept in the model dtype (:data:`KEPT_UNQUANTIZED`): the few weights where quantizing saves almost
nothing and costs accuracy or has no kernel. A quantization config from the checkpoint that would
quantize one of them, or a checkpoint that stores one of them quantized, is refused with an error
naming the layer, never loaded as something else or run unquantized.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import nn

# Leaf module name -> why it stays in the model dtype.
KEPT_UNQUANTIZED: dict[str, str] = {
    "conv1d": "Mamba's depthwise causal conv (4 taps per channel) is no matrix product",
    "x_proj": (
        "Mamba's x_proj (d_inner -> dt_rank + 2 d_state) makes the scan's dt, B and C, whose errors the recurrence "
        "carries over the whole context; with dt_proj it is 0.5 % of the weights"
    ),
    "dt_proj": (
        "Mamba's dt_proj (dt_rank -> d_inner) feeds softplus and exp(dt A) in the scan; its input width "
        "(dt_rank = hidden / 16) is no multiple of the 128-wide W4A16 groups"
    ),
    "embed_tokens": (
        "the embedding is a row lookup (one row per token: nothing to gain per step), and the tied head reads it "
        "as a float matrix; to quantize the head, store it untied as lm_head (vllm_sambay.quantize does)"
    ),
}

# The same policy as the ignore list of a compressed-tensors / llm-compressor recipe (module-name
# regexes; they match the checkpoint's names and the plugin's alike). Norms, A_log, D and the
# differential-attention lambdas and subln are not Linear weights and need no entry, except
# subln, whose module name does not end in "norm" (llm-compressor's model-free rule).
CHECKPOINT_IGNORE: tuple[str, ...] = (
    r"re:.*\.conv1d$",
    r"re:.*\.x_proj$",
    r"re:.*\.dt_proj$",
    r"re:.*embed_tokens$",
    r"re:.*\.subln$",
)

# Checkpoint tensors that only a quantized layer has (compressed-tensors, GPTQ, AWQ, FP8).
_PLAIN_PARAMS = frozenset({"weight", "bias"})


def kept_reason(module_name: str) -> str | None:
    """Why the module stays in the model dtype, or None if it may be quantized."""
    return KEPT_UNQUANTIZED.get(module_name.rsplit(".", 1)[-1])


def refuse_quantized_tensors(weights: Iterable[tuple[str, torch.Tensor]]) -> Iterator[tuple[str, torch.Tensor]]:
    """Pass checkpoint tensors through; raise on a quantized tensor (``weight_packed``,
    ``weight_scale``, ``qweight``, ...) of a layer the plugin keeps in the model dtype."""
    for name, tensor in weights:
        module_name, _, param = name.rpartition(".")
        if param not in _PLAIN_PARAMS and (why := kept_reason(module_name)) is not None:
            raise ValueError(
                f"{name}: the checkpoint stores {module_name} quantized, but vllm-sambay keeps it unquantized "
                f"({why}). Re-quantize with it ignored (vllm_sambay.quantization.CHECKPOINT_IGNORE)."
            )
        yield name, tensor


def refuse_config_quantizing_kept_layers(model: nn.Module, quant_config, *, tied_head: bool) -> None:
    """A checkpoint's quantization config must not quantize a layer the plugin keeps in the model
    dtype (it would otherwise be loaded as something it is not, or silently run unquantized).

    Asks the config itself (``get_quant_method``, the call vLLM's layers make) about every kept
    module. Only for configs that come with the checkpoint: an online method (``--quantization
    fp8`` on a bf16 checkpoint) names no layers and quantizes exactly the layers built with it."""
    from vllm.model_executor.layers.linear import UnquantizedLinearMethod
    from vllm.model_executor.layers.vocab_parallel_embedding import UnquantizedEmbeddingMethod

    unquantized = (UnquantizedLinearMethod, UnquantizedEmbeddingMethod)
    for name, module in model.named_modules():
        why = kept_reason(name)
        if name.endswith("lm_head") and tied_head:
            why = KEPT_UNQUANTIZED["embed_tokens"]
        if why is None:
            continue
        method = quant_config.get_quant_method(module, prefix=name)
        if method is not None and not isinstance(method, unquantized):
            raise ValueError(
                f"{name}: the checkpoint's quantization config ({quant_config.get_name()}) quantizes this layer, "
                f"but vllm-sambay keeps it unquantized ({why}). Add it to the config's ignore list "
                f"(vllm_sambay.quantization.CHECKPOINT_IGNORE) and re-quantize."
            )


def is_checkpoint_quantization(hf_config) -> bool:
    """The quantization config came with the checkpoint (``quantization_config`` in config.json)."""
    return getattr(hf_config, "quantization_config", None) is not None
