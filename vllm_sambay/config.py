"""SambaY configuration and the one place that decides what every layer is.

The published ``config.json`` of Phi-4-mini-flash-reasoning exists in several revisions
(``sliding_window`` as an int or a per-layer list, with or without ``layer_types``, an old
``layers_block_type``). All of them describe the same network, so the layout is computed from
the layer index alone and the config keys only supply numbers.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

try:  # transformers >= 5 spells it PreTrainedConfig; the old name is an alias there.
    from transformers import PreTrainedConfig as _BaseConfig
except ImportError:  # pragma: no cover - transformers 4.x
    from transformers import PretrainedConfig as _BaseConfig

MODEL_TYPE = "phi4flash"
ARCHITECTURE = "Phi4FlashForCausalLM"
# The context Phi-4-mini-flash-reasoning was trained and evaluated with (model card: 64K; Microsoft's
# serve script: --max-model-len 65536). Its config.json allows 262144 positions; SambaY has no
# positional encoding that would stop it there, but nothing past 64K was validated.
TRAINED_CONTEXT = 65536
# RMSNorm epsilon inside differential attention (not the config's layer_norm_eps): fixed by the
# published modelling code, shared by the vLLM layer, the reference and the Triton kernel.
SUBLN_EPS = 1e-5


class LayerKind(enum.StrEnum):
    MAMBA = "mamba"
    MAMBA_MEMORY = "mamba_memory"  # layer N/2: Mamba-1 that also exports the GMU memory
    SLIDING_ATTENTION = "sliding_attention"
    FULL_ATTENTION = "full_attention"  # layer N/2+1: the only full KV cache
    GMU = "gmu"
    CROSS_ATTENTION = "cross_attention"  # queries only, reads the full layer's KV


# How each kind is spelled in HF's ``layer_types`` vocabulary (transformers validates it, and
# vLLM reads it to decide that the model is hybrid and that not every layer is windowed).
_HF_LAYER_TYPE = {
    LayerKind.MAMBA: "linear_attention",
    LayerKind.MAMBA_MEMORY: "linear_attention",
    LayerKind.SLIDING_ATTENTION: "sliding_attention",
    LayerKind.FULL_ATTENTION: "full_attention",
    LayerKind.GMU: "linear_attention",
    LayerKind.CROSS_ATTENTION: "full_attention",
}


def lambda_init(layer_idx: int) -> float:
    """Differential-attention lambda offset; depends on the global 0-based layer index."""
    return 0.8 - 0.6 * math.exp(-0.3 * layer_idx)


@dataclass(frozen=True)
class LayerSpec:
    index: int
    kind: LayerKind
    sliding_window: int | None = None  # only ever set on SLIDING_ATTENTION layers
    kv_source: int | None = None  # CROSS_ATTENTION: index of the layer whose KV it reads

    @property
    def is_mamba(self) -> bool:
        return self.kind in (LayerKind.MAMBA, LayerKind.MAMBA_MEMORY)

    @property
    def is_attention(self) -> bool:
        return self.kind in (
            LayerKind.SLIDING_ATTENTION,
            LayerKind.FULL_ATTENTION,
            LayerKind.CROSS_ATTENTION,
        )

    @property
    def owns_kv(self) -> bool:
        return self.kind in (LayerKind.SLIDING_ATTENTION, LayerKind.FULL_ATTENTION)

    @property
    def lambda_init(self) -> float:
        return lambda_init(self.index)


def compute_layer_layout(num_layers: int, sliding_window: int | None) -> tuple[LayerSpec, ...]:
    """Map every layer index to its kind: even = Mamba-type, odd = attention-type;
    N/2 exports memory, N/2+1 owns the global KV, N/2+2.. is the cross-decoder."""
    if num_layers < 4 or num_layers % 4:
        raise ValueError(
            f"num_hidden_layers must be a positive multiple of 4 (got {num_layers}): "
            "layer N/2 must be a Mamba layer and N/2+1 an attention layer"
        )
    half = num_layers // 2
    specs = []
    for i in range(num_layers):
        if i % 2 == 0:
            if i < half:
                kind = LayerKind.MAMBA
            elif i == half:
                kind = LayerKind.MAMBA_MEMORY
            else:
                kind = LayerKind.GMU
            specs.append(LayerSpec(i, kind))
        elif i < half:
            specs.append(LayerSpec(i, LayerKind.SLIDING_ATTENTION, sliding_window=sliding_window))
        elif i == half + 1:
            specs.append(LayerSpec(i, LayerKind.FULL_ATTENTION))
        else:
            specs.append(LayerSpec(i, LayerKind.CROSS_ATTENTION, kv_source=half + 1))
    return tuple(specs)


def check_tensor_parallel(num_heads: int, num_kv_heads: int, tp: int) -> None:
    """Each rank needs whole (even, odd) head pairs and whole packed KV groups."""
    if num_heads % (2 * tp) or num_kv_heads % (2 * tp):
        raise ValueError(
            f"tensor_parallel_size={tp} does not split SambaY's differential heads: "
            f"num_attention_heads ({num_heads}) and num_key_value_heads ({num_kv_heads}) "
            f"must both be divisible by 2 * tensor_parallel_size"
        )


def _scalar_window(value: Any, num_layers: int) -> int | None:
    """Old revisions store a per-layer list (window on odd self-decoder layers, None
    elsewhere); newer ones an int. Zero or None means no window."""
    if isinstance(value, (list, tuple)):
        windows = {int(v) for v in value if v}
        if len(windows) > 1:
            raise ValueError(f"sliding_window: per-layer windows must agree, got {sorted(windows)}")
        return windows.pop() if windows else None
    if value in (None, 0, False):
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:  # bool is an int subclass
        raise ValueError(f"sliding_window must be a positive int, a per-layer list or null, got {value!r}")
    return value


class Phi4FlashConfig(_BaseConfig):
    """Config for ``Phi4FlashForCausalLM`` (SambaY). Defaults are the published model's."""

    model_type = MODEL_TYPE
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(
        self,
        vocab_size: int = 200064,
        hidden_size: int = 2560,
        intermediate_size: int = 10240,
        num_hidden_layers: int = 32,
        num_attention_heads: int = 40,
        num_key_value_heads: int | None = 20,
        max_position_embeddings: int = 262144,
        sliding_window: int | list | None = 512,
        hidden_act: str = "silu",
        layer_norm_eps: float = 1e-5,
        initializer_range: float = 0.02,
        use_cache: bool = True,
        tie_word_embeddings: bool = True,
        rope_theta: float = 10000.0,  # unused (no positional encoding), kept for round trips
        attention_dropout: float = 0.0,
        embd_pdrop: float = 0.0,
        resid_pdrop: float = 0.0,
        mb_per_layer: int = 2,
        mamba_d_state: int = 16,
        mamba_d_conv: int = 4,
        mamba_expand: int = 2,
        mamba_dt_rank: int | str = "auto",
        mamba_conv_bias: bool = True,
        mamba_proj_bias: bool = False,
        pad_token_id: int | None = 0,
        bos_token_id: int | None = 1,
        eos_token_id: int | list[int] | None = 2,
        **kwargs: Any,
    ) -> None:
        # Derived in every revision; whatever a file says is replaced by the computed layout.
        kwargs.pop("layers_block_type", None)
        kwargs.pop("layer_types", None)
        kwargs.pop("head_dim", None)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_attention_heads if num_key_value_heads is None else num_key_value_heads
        self.max_position_embeddings = max_position_embeddings
        self.sliding_window = _scalar_window(sliding_window, num_hidden_layers)
        self.hidden_act = hidden_act
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.use_cache = use_cache
        self.rope_theta = rope_theta
        self.attention_dropout = attention_dropout
        self.embd_pdrop = embd_pdrop
        self.resid_pdrop = resid_pdrop
        self.mb_per_layer = mb_per_layer
        self.mamba_d_state = mamba_d_state
        self.mamba_d_conv = mamba_d_conv
        self.mamba_expand = mamba_expand
        self.mamba_dt_rank = math.ceil(hidden_size / 16) if mamba_dt_rank == "auto" else int(mamba_dt_rank)
        self.mamba_conv_bias = mamba_conv_bias
        self.mamba_proj_bias = mamba_proj_bias
        self._validate()
        self.head_dim = hidden_size // num_attention_heads
        self.layer_types = [_HF_LAYER_TYPE[s.kind] for s in self.layer_layout]
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )

    def _validate(self) -> None:
        def need(ok: bool, field: str, why: str) -> None:
            if not ok:
                raise ValueError(f"{field} = {getattr(self, field)!r}: {why}")

        need(self.mb_per_layer == 2, "mb_per_layer", "SambaY alternates Mamba and attention (must be 2)")
        need(
            self.num_attention_heads > 0 and self.num_attention_heads % 2 == 0,
            "num_attention_heads",
            "differential attention splits heads into two halves (must be even)",
        )
        need(
            self.num_key_value_heads > 0 and self.num_key_value_heads % 2 == 0,
            "num_key_value_heads",
            "differential attention splits KV heads into two halves (must be even)",
        )
        need(
            self.num_attention_heads % self.num_key_value_heads == 0,
            "num_key_value_heads",
            "must divide num_attention_heads",
        )
        need(
            self.hidden_size % self.num_attention_heads == 0,
            "hidden_size",
            f"must be divisible by num_attention_heads ({self.num_attention_heads})",
        )
        need(self.mamba_d_conv >= 2, "mamba_d_conv", "must be at least 2")
        compute_layer_layout(self.num_hidden_layers, self.sliding_window)  # checks num_hidden_layers

    @cached_property
    def layer_layout(self) -> tuple[LayerSpec, ...]:
        return compute_layer_layout(self.num_hidden_layers, self.sliding_window)

    @property
    def mamba_d_inner(self) -> int:
        return self.mamba_expand * self.hidden_size

    @property
    def memory_layer(self) -> int:
        return self.num_hidden_layers // 2

    @property
    def kv_layer(self) -> int:
        return self.num_hidden_layers // 2 + 1

    @property
    def cross_decoder_start(self) -> int:
        """First layer that only reads caches (GMU / cross attention): everything from here on
        may run on the rows whose logits are needed (YOCO fast prefill)."""
        return self.kv_layer + 1

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out.pop("layer_layout", None)
        return out
