"""``Phi4FlashForCausalLM`` (SambaY) for the vLLM V1 engine.

Layer kinds come from :func:`vllm_sambay.config.Phi4FlashConfig.layer_layout`:
Mamba-1 layers hold conv/ssm state slots, sliding and global differential attention layers own
paged KV, cross layers read the global layer's KV through vLLM's KV sharing, and GMU layers
gate the memory that Mamba layer N/2 exports. Module names mirror the HF checkpoint
(``model.layers.{i}.attn.*``) so weights load by name.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from vllm.compilation.decorators import support_torch_compile
from vllm.config import VllmConfig
from vllm.model_executor.layers.activation import SiluAndMul
from vllm.model_executor.layers.logits_processor import LogitsProcessor
from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead, VocabParallelEmbedding
from vllm.model_executor.models.interfaces import HasInnerState, IsHybrid
from vllm.model_executor.models.utils import AutoWeightsLoader, WeightsMapper, maybe_prefix
from vllm.sequence import IntermediateTensors

from . import compat
from .config import LayerKind, LayerSpec, Phi4FlashConfig
from .layers.diff_attention import DifferentialAttention
from .layers.gmu import GatedMemoryUnit
from .layers.mamba import SambaYMamba


class SambaYMLP(nn.Module):
    """fc1 = [gate | up] (gate rows first), fc2(silu(gate) * up)."""

    def __init__(self, config: Phi4FlashConfig, *, quant_config=None, prefix: str = "") -> None:
        super().__init__()
        inter = config.intermediate_size
        self.fc1 = compat.MergedColumnParallelLinear(
            config.hidden_size, [inter, inter], bias=False, quant_config=quant_config, prefix=f"{prefix}.fc1"
        )
        self.fc2 = compat.RowParallelLinear(
            inter, config.hidden_size, bias=False, quant_config=quant_config, prefix=f"{prefix}.fc2"
        )
        self.act = SiluAndMul()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.fc1(x)
        out, _ = self.fc2(self.act(h))
        return out


class SambaYDecoderLayer(nn.Module):
    """Pre-norm block: x += mixer(LN(x)); x += MLP(LN(x)). The residual stream stays float32
    (as in the reference implementation); norms and mixers run in the model dtype."""

    def __init__(self, config: Phi4FlashConfig, spec: LayerSpec, vllm_config: VllmConfig, prefix: str) -> None:
        super().__init__()
        self.spec = spec
        cache_config = vllm_config.cache_config
        quant_config = vllm_config.quant_config
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_attention_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = SambaYMLP(config, quant_config=quant_config, prefix=f"{prefix}.mlp")
        model_prefix = prefix.rsplit(".layers.", 1)[0]
        self.attn: nn.Module
        if spec.is_mamba:
            self.attn = SambaYMamba(
                config, spec, model_config=vllm_config.model_config, cache_config=cache_config,
                prefix=f"{prefix}.attn",
            )
        elif spec.kind is LayerKind.GMU:
            self.attn = GatedMemoryUnit(config, quant_config=quant_config, prefix=f"{prefix}.attn")
        else:
            self.attn = DifferentialAttention(
                config, spec, cache_config=cache_config, quant_config=quant_config,
                model_prefix=model_prefix, prefix=f"{prefix}.attn",
            )

    def forward(
        self, residual: torch.Tensor, memory: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        dtype = self.input_layernorm.weight.dtype
        h = self.input_layernorm(residual.to(dtype))
        if self.spec.is_mamba:
            buf = torch.empty(h.shape[0], self.attn.output_width(), dtype=dtype, device=h.device)
            self.attn(h, buf)
            mixed = buf[:, : h.shape[1]]
            if self.attn.emits_memory:
                memory = buf[:, h.shape[1] :]
        elif self.spec.kind is LayerKind.GMU:
            assert memory is not None, "GMU layer before the memory layer"
            mixed = self.attn(h, memory)
        else:
            mixed = self.attn(h)
        residual = residual + mixed.float()
        h = self.post_attention_layernorm(residual.to(dtype))
        residual = residual + self.mlp(h).float()
        return residual, memory


@support_torch_compile(
    dynamic_arg_dims={"input_ids": 0, "positions": -1, "intermediate_tensors": 0, "inputs_embeds": 0}
)
class SambaYModel(nn.Module):
    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        config: Phi4FlashConfig = vllm_config.model_config.hf_config
        self.config = config
        self.embed_tokens = VocabParallelEmbedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            SambaYDecoderLayer(config, spec, vllm_config, prefix=f"{prefix}.layers.{spec.index}")
            for spec in config.layer_layout
        )
        self.final_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(input_ids)

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        hidden = inputs_embeds if inputs_embeds is not None else self.embed_input_ids(input_ids)
        residual = hidden.float()
        memory = None
        for layer in self.layers:
            residual, memory = layer(residual, memory)
        return self.final_layernorm(residual.to(self.final_layernorm.weight.dtype))


class Phi4FlashForCausalLM(nn.Module, HasInnerState, IsHybrid):
    """SambaY (Phi-4-mini-flash-reasoning) on vLLM V1."""

    hf_to_vllm_mapper = WeightsMapper(
        orig_to_new_substr={".inner_cross_attn.": ".", ".A_log": ".A"},
    )

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        config = vllm_config.model_config.hf_config
        if not isinstance(config, Phi4FlashConfig):
            config = Phi4FlashConfig(**config.to_dict())
            vllm_config.model_config.hf_config = config
        if getattr(vllm_config.cache_config, "kv_sharing_fast_prefill", False):
            # vLLM would hand the cross layers truncated (logits-rows-only) attention metadata,
            # which this model does not consume yet: refuse instead of computing wrong tokens.
            raise ValueError(
                "Phi4FlashForCausalLM (vllm-sambay) does not support --kv-sharing-fast-prefill yet; "
                "start without that flag"
            )
        if vllm_config.speculative_config is not None:
            # Speculative decoding feeds several tokens per decode row and expects the Mamba
            # layers to keep per-draft states; the plugin's Mamba step handles one token per row.
            raise ValueError(
                "Phi4FlashForCausalLM (vllm-sambay) does not support speculative decoding yet; "
                "start without --speculative-config"
            )
        self.config = config
        self.vllm_config = vllm_config
        self.model = SambaYModel(vllm_config=vllm_config, prefix=maybe_prefix(prefix, "model"))
        if config.tie_word_embeddings:
            self.lm_head = self.model.embed_tokens
        else:
            self.lm_head = ParallelLMHead(
                config.vocab_size, config.hidden_size, prefix=maybe_prefix(prefix, "lm_head")
            )
        self.logits_processor = LogitsProcessor(config.vocab_size)

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.embed_input_ids(input_ids)

    get_input_embeddings = embed_input_ids  # name used by older vLLM releases

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        return self.model(input_ids, positions, intermediate_tensors, inputs_embeds)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        return self.logits_processor(self.lm_head, hidden_states)

    # -- hybrid-model hooks used by vLLM's KV-cache planner and prefix caching --------------
    @classmethod
    def get_mamba_state_dtype_from_config(cls, vllm_config: VllmConfig) -> tuple[torch.dtype, ...]:
        return compat.MambaStateDtypeCalculator.mamba1_state_dtype(
            vllm_config.model_config.dtype,
            vllm_config.cache_config.mamba_cache_dtype,
            vllm_config.cache_config.mamba_ssm_cache_dtype,
        )

    @classmethod
    def get_mamba_state_shape_from_config(cls, vllm_config: VllmConfig) -> tuple[tuple[int, int], ...]:
        hf = vllm_config.model_config.hf_config
        return compat.MambaStateShapeCalculator.mamba1_state_shape(
            tp_world_size=vllm_config.parallel_config.tensor_parallel_size,
            intermediate_size=hf.mamba_expand * hf.hidden_size,
            state_size=hf.mamba_d_state,
            conv_kernel=hf.mamba_d_conv,
        )

    @classmethod
    def get_mamba_state_copy_func(cls):
        return compat.MambaStateCopyFuncCalculator.mamba1_state_copy_func()

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        if self.config.tie_word_embeddings:  # the head is the embedding; a stored copy is redundant
            weights = ((name, w) for name, w in weights if not name.startswith("lm_head."))
        return AutoWeightsLoader(self).load_weights(weights, mapper=self.hf_to_vllm_mapper)
