"""SambaY's decoder layers: one class per layer kind behind one interface, chosen by the layout.

Every layer is the same pre-norm block, ``x += mixer(LN(x)); x += MLP(LN(x))``, and differs only
in its mixer. :class:`SambaYDecoderLayer` holds the norms, the MLP and the block; each subclass
builds its mixer under a name that says what it is (``mamba``, ``self_attn``, ``gmu``,
``cross_attn``) and implements :meth:`SambaYDecoderLayer.mix`. :data:`DECODER_LAYER_TYPES` maps each
:class:`~vllm_sambay.config.LayerKind` of ``Phi4FlashConfig.layer_layout`` to its class (vLLM's
jamba.py does the same with its ``ALL_DECODER_LAYER_TYPES``).

The checkpoint calls every mixer ``attn`` (``model.layers.{i}.attn.*``);
:func:`checkpoint_to_module_names` maps those names onto the modules here, for weights and for
the layer names in quantization configs.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn
from vllm.config import VllmConfig
from vllm.model_executor.layers.activation import SiluAndMul
from vllm.model_executor.layers.linear import MergedColumnParallelLinear, RowParallelLinear
from vllm.model_executor.layers.quantization import QuantizationConfig
from vllm.model_executor.models.utils import WeightsMapper

from ..config import LayerKind, LayerSpec, Phi4FlashConfig
from .diff_attention import DifferentialAttention
from .gmu import GatedMemoryUnit
from .mamba import SambaYMamba

CHECKPOINT_MIXER_NAME = "attn"  # what the published checkpoint calls every layer's mixer


class SambaYMLP(nn.Module):
    """fc1 = [gate | up] (gate rows first), fc2(silu(gate) * up)."""

    def __init__(
        self, config: Phi4FlashConfig, *, quant_config: QuantizationConfig | None = None, prefix: str = ""
    ) -> None:
        super().__init__()
        inter = config.intermediate_size
        self.fc1 = MergedColumnParallelLinear(
            config.hidden_size, [inter, inter], bias=False, quant_config=quant_config, prefix=f"{prefix}.fc1"
        )
        self.fc2 = RowParallelLinear(
            inter, config.hidden_size, bias=False, quant_config=quant_config, prefix=f"{prefix}.fc2"
        )
        self.act = SiluAndMul()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.fc1(x)
        out, _ = self.fc2(self.act(h))
        return out


class SambaYDecoderLayer(nn.Module):
    """The interface of every decoder layer: ``forward(residual, memory) -> (residual, memory)``.

    The residual stream stays float32 (as in the reference implementation); norms and mixers run
    in the model dtype. ``memory`` is the GMU memory: produced by the memory layer (N/2), read by
    the GMU layers, passed through by the others."""

    mixer_name: ClassVar[str]

    def __init__(self, config: Phi4FlashConfig, spec: LayerSpec, vllm_config: VllmConfig, prefix: str) -> None:
        super().__init__()
        self.spec = spec
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_attention_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = SambaYMLP(config, quant_config=vllm_config.quant_config, prefix=f"{prefix}.mlp")

    @property
    def mixer(self) -> nn.Module:
        return getattr(self, self.mixer_name)

    def mix(self, h: torch.Tensor, memory: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The mixer's output for the normed input ``h``, and the memory for the next layers."""
        raise NotImplementedError

    def forward(self, residual: torch.Tensor, memory: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        dtype = self.input_layernorm.weight.dtype
        mixed, memory = self.mix(self.input_layernorm(residual.to(dtype)), memory)
        residual = residual + mixed.float()
        h = self.post_attention_layernorm(residual.to(dtype))
        residual = residual + self.mlp(h).float()
        return residual, memory


class MambaDecoderLayer(SambaYDecoderLayer):
    """Mamba-1 (self-decoder, even layers up to N/2); layer N/2 also exports the GMU memory."""

    mixer_name = "mamba"

    def __init__(self, config: Phi4FlashConfig, spec: LayerSpec, vllm_config: VllmConfig, prefix: str) -> None:
        super().__init__(config, spec, vllm_config, prefix)
        self.mamba = SambaYMamba(
            config,
            spec,
            model_config=vllm_config.model_config,
            cache_config=vllm_config.cache_config,
            quant_config=vllm_config.quant_config,
            prefix=f"{prefix}.{self.mixer_name}",
        )

    def mix(self, h: torch.Tensor, memory: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        # One buffer for the custom op's output: hidden columns, then (memory layer) the scan output.
        buf = torch.empty(h.shape[0], self.mamba.output_width(), dtype=h.dtype, device=h.device)
        self.mamba(h, buf)
        if self.mamba.emits_memory:
            memory = buf[:, h.shape[1] :]
        return buf[:, : h.shape[1]], memory


class _DifferentialAttentionLayer(SambaYDecoderLayer):
    """A layer whose mixer is differential attention, built under the subclass's ``mixer_name``."""

    def __init__(self, config: Phi4FlashConfig, spec: LayerSpec, vllm_config: VllmConfig, prefix: str) -> None:
        super().__init__(config, spec, vllm_config, prefix)
        mixer = DifferentialAttention(
            config,
            spec,
            cache_config=vllm_config.cache_config,
            quant_config=vllm_config.quant_config,
            kv_sharing_target=_kv_sharing_target(config, spec, model_prefix=prefix.rsplit(".layers.", 1)[0]),
            prefix=f"{prefix}.{self.mixer_name}",
        )
        setattr(self, self.mixer_name, mixer)

    def mix(self, h: torch.Tensor, memory: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.mixer(h), memory


class SelfAttentionDecoderLayer(_DifferentialAttentionLayer):
    """Differential self-attention: sliding window (odd layers below N/2) or global (N/2+1, the
    only full KV cache, which the cross-attention layers read)."""

    mixer_name = "self_attn"
    self_attn: DifferentialAttention


class GMUDecoderLayer(SambaYDecoderLayer):
    """Gated memory unit (cross-decoder, even layers from N/2+2): gates layer N/2's memory."""

    mixer_name = "gmu"

    def __init__(self, config: Phi4FlashConfig, spec: LayerSpec, vllm_config: VllmConfig, prefix: str) -> None:
        super().__init__(config, spec, vllm_config, prefix)
        self.gmu = GatedMemoryUnit(config, quant_config=vllm_config.quant_config, prefix=f"{prefix}.{self.mixer_name}")

    def mix(self, h: torch.Tensor, memory: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        assert memory is not None, "GMU layer before the memory layer"
        return self.gmu(h, memory), memory


class CrossAttentionDecoderLayer(_DifferentialAttentionLayer):
    """Differential cross-attention (cross-decoder, odd layers from N/2+3): queries only, over
    layer N/2+1's KV through vLLM's KV sharing."""

    mixer_name = "cross_attn"
    cross_attn: DifferentialAttention


DECODER_LAYER_TYPES: dict[LayerKind, type[SambaYDecoderLayer]] = {
    LayerKind.MAMBA: MambaDecoderLayer,
    LayerKind.MAMBA_MEMORY: MambaDecoderLayer,
    LayerKind.SLIDING_ATTENTION: SelfAttentionDecoderLayer,
    LayerKind.FULL_ATTENTION: SelfAttentionDecoderLayer,
    LayerKind.GMU: GMUDecoderLayer,
    LayerKind.CROSS_ATTENTION: CrossAttentionDecoderLayer,
}


def decoder_layer(config: Phi4FlashConfig, spec: LayerSpec, vllm_config: VllmConfig, prefix: str) -> SambaYDecoderLayer:
    return DECODER_LAYER_TYPES[spec.kind](config, spec, vllm_config, prefix)


def mixer_prefix(model_prefix: str, spec: LayerSpec) -> str:
    """Module name of a layer's mixer, e.g. ``model.layers.3.self_attn``."""
    return f"{model_prefix}.layers.{spec.index}.{DECODER_LAYER_TYPES[spec.kind].mixer_name}"


def _kv_sharing_target(config: Phi4FlashConfig, spec: LayerSpec, model_prefix: str) -> str | None:
    """Name of the vLLM ``Attention`` module whose KV cache a cross-attention layer reads."""
    if spec.kv_source is None:
        return None
    return f"{mixer_prefix(model_prefix, config.layer_layout[spec.kv_source])}.attn"


def checkpoint_to_module_names(config: Phi4FlashConfig, model_prefix: str = "model") -> WeightsMapper:
    """``model.layers.{i}.attn.`` -> ``model.layers.{i}.<mixer>.``, per the layout: for weight names
    and for the layer names a quantization config lists (targets, ignore)."""
    return WeightsMapper(
        orig_to_new_prefix={
            f"{model_prefix}.layers.{spec.index}.{CHECKPOINT_MIXER_NAME}.": f"{mixer_prefix(model_prefix, spec)}."
            for spec in config.layer_layout
        }
    )
