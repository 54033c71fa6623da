"""``Phi4FlashForCausalLM`` (SambaY) for the vLLM V1 engine.

Layer kinds come from :func:`vllm_sambay.config.Phi4FlashConfig.layer_layout`, one decoder-layer
class per kind (:mod:`vllm_sambay.layers.decoder`): Mamba-1 layers hold conv/ssm state slots,
sliding and global differential attention layers own paged KV, cross layers read the global
layer's KV through vLLM's KV sharing, and GMU layers gate the memory that Mamba layer N/2
exports. The checkpoint names every mixer ``attn``; :attr:`Phi4FlashForCausalLM.hf_to_vllm_mapper`
maps its names onto the modules' for weights and quantization configs.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from vllm.compilation.decorators import support_torch_compile
from vllm.config import VllmConfig
from vllm.forward_context import get_forward_context
from vllm.model_executor.layers.logits_processor import LogitsProcessor
from vllm.model_executor.layers.mamba.mamba_utils import (
    MambaStateCopyFuncCalculator,
    MambaStateDtypeCalculator,
    MambaStateShapeCalculator,
)
from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead, VocabParallelEmbedding
from vllm.model_executor.models.interfaces import HasInnerState, IsHybrid, SupportsQuant
from vllm.model_executor.models.utils import AutoWeightsLoader, WeightsMapper, maybe_prefix
from vllm.sequence import IntermediateTensors
from vllm.v1.attention.backends.utils import KVSharingFastPrefillMetadata

from .config import Phi4FlashConfig
from .layers.decoder import checkpoint_to_module_names, decoder_layer
from .quantization import (
    is_checkpoint_quantization,
    refuse_config_quantizing_kept_layers,
    refuse_quantized_tensors,
)


def fast_prefill_enabled(vllm_config: VllmConfig) -> bool:
    return vllm_config.cache_config.kv_sharing_fast_prefill


def _logits_rows(layer_name: str) -> tuple[torch.Tensor | None, int | None]:
    """The rows vLLM will sample from this step, as it handed them to the KV-sharing layers
    under ``--kv-sharing-fast-prefill``; (None, None) on profile/dummy runs."""
    meta = get_forward_context().attn_metadata
    if isinstance(meta, list):  # micro-batched steps carry one dict per micro-batch
        meta = meta[0] if len(meta) == 1 else None
    if not isinstance(meta, dict):
        return None, None
    layer_meta = meta.get(layer_name)
    if layer_meta is None:
        return None, None
    if not isinstance(layer_meta, KVSharingFastPrefillMetadata):
        raise TypeError(
            f"{layer_name}: vLLM gave {type(layer_meta).__name__} under --kv-sharing-fast-prefill, "
            "expected the fast-prefill metadata that carries the sampled rows"
        )
    return layer_meta.logits_indices_padded, layer_meta.num_logits_indices


@support_torch_compile(dynamic_arg_dims={"input_ids": 0, "inputs_embeds": 0}, enable_if=fast_prefill_enabled)
class SambaYSelfDecoder(nn.Module):
    """Embedding and layers 0..N/2+1. Every token must run them: they advance the Mamba states
    and write the sliding-window and global KV that later tokens read."""

    def __init__(
        self, *, vllm_config: VllmConfig, prefix: str = "", embed_tokens: nn.Module, layers: nn.ModuleList
    ) -> None:
        super().__init__()
        self.embed_tokens = embed_tokens
        self.layers = layers

    def forward(
        self, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = inputs_embeds if inputs_embeds is not None else self.embed_tokens(input_ids)
        residual = hidden.float()
        memory = None
        for layer in self.layers:
            residual, memory = layer(residual, memory)
        assert memory is not None, "the self-decoder ends after the memory layer"
        return residual, memory


@support_torch_compile(dynamic_arg_dims={"residual": 0, "memory": 0}, enable_if=fast_prefill_enabled)
class SambaYCrossDecoder(nn.Module):
    """GMU and cross-attention layers: they only read caches, so a row needs them only if its
    logits are needed."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "", layers: nn.ModuleList) -> None:
        super().__init__()
        self.layers = layers

    def forward(self, residual: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            residual, _ = layer(residual, memory)
        return residual


@support_torch_compile(
    dynamic_arg_dims={"input_ids": 0, "positions": -1, "intermediate_tensors": 0, "inputs_embeds": 0},
    enable_if=lambda vllm_config: not fast_prefill_enabled(vllm_config),
)
class SambaYModel(nn.Module):
    """Self-decoder then cross-decoder. Compiled as one graph by default; with
    ``--kv-sharing-fast-prefill`` the two halves are compiled apart and the cross-decoder runs
    only on the rows vLLM samples from (YOCO prefill skip, as in vLLM's gemma3n)."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        config: Phi4FlashConfig = vllm_config.model_config.hf_config
        self.config = config
        # Registered first, so parameter names stay those of the checkpoint (model.layers.N...).
        # Never quantized (vllm_sambay.quantization.KEPT_UNQUANTIZED): a row lookup, and the tied head's matrix.
        self.embed_tokens = VocabParallelEmbedding(
            config.vocab_size, config.hidden_size, prefix=f"{prefix}.embed_tokens"
        )
        self.layers = nn.ModuleList(
            decoder_layer(config, spec, vllm_config, prefix=f"{prefix}.layers.{spec.index}")
            for spec in config.layer_layout
        )
        self.final_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        split = config.cross_decoder_start
        # Imported here as gemma3n does: at module level it entangles vLLM's compilation imports.
        from vllm.compilation.backends import set_model_tag

        # One tag per compiled half: under --kv-sharing-fast-prefill each half is its own
        # torch.compile graph, and the tag keeps their compile caches apart.
        with set_model_tag("self_decoder"):
            self.self_decoder = SambaYSelfDecoder(
                vllm_config=vllm_config,
                prefix=f"{prefix}.self_decoder",
                embed_tokens=self.embed_tokens,
                layers=self.layers[:split],
            )
        with set_model_tag("cross_decoder"):
            self.cross_decoder = SambaYCrossDecoder(
                vllm_config=vllm_config, prefix=f"{prefix}.cross_decoder", layers=self.layers[split:]
            )
        self.fast_prefill = fast_prefill_enabled(vllm_config)
        if self.fast_prefill:
            # The cross-decoder's inputs live in fixed buffers, so CUDA graphs captured for it
            # replay on the same addresses.
            rows = vllm_config.scheduler_config.max_num_batched_tokens
            device = self.final_layernorm.weight.device
            self.sampled_layer_name = self.layers[-1].cross_attn.attn.layer_name
            self.residual_rows = torch.zeros(rows, config.hidden_size, dtype=torch.float32, device=device)
            self.memory_rows = torch.zeros(
                rows,
                self.layers[config.memory_layer].mamba.local_inner,
                dtype=vllm_config.model_config.dtype,
                device=device,
            )

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(input_ids)

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        residual, memory = self.self_decoder(input_ids, inputs_embeds)
        if self.fast_prefill:
            return self._cross_decode_sampled_rows(residual, memory)
        return self._norm(self.cross_decoder(residual, memory))

    def _norm(self, residual: torch.Tensor) -> torch.Tensor:
        return self.final_layernorm(residual.to(self.final_layernorm.weight.dtype))

    def _cross_decode_sampled_rows(self, residual: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        rows, num_rows = _logits_rows(self.sampled_layer_name)
        if rows is None:  # profile / dummy run: every row
            rows = torch.arange(residual.shape[0], device=residual.device)
        n = rows.shape[0]
        self.residual_rows[:n].copy_(residual[rows])
        self.memory_rows[:n].copy_(memory[rows])
        out = self._norm(self.cross_decoder(self.residual_rows[:n], self.memory_rows[:n]))
        if num_rows is None:
            return out
        # Rows nobody samples from keep the self-decoder's state (vLLM refuses prompt logprobs
        # under this flag, so nothing reads them).
        hidden = self._norm(residual)
        hidden[rows[:num_rows]] = out[:num_rows]
        return hidden


class Phi4FlashForCausalLM(nn.Module, HasInnerState, IsHybrid, SupportsQuant):
    """SambaY (Phi-4-mini-flash-reasoning) on vLLM V1. Quantization: :mod:`vllm_sambay.quantization`."""

    # The layout-independent part (SupportsQuant applies it to a quantization config before
    # __init__); __init__ adds the per-layer mixer names of this config's layout.
    hf_to_vllm_mapper = WeightsMapper(
        orig_to_new_substr={".inner_cross_attn.": ".", ".A_log": ".A"},
    )
    # The checkpoint already stores these fused, under the names vLLM's layers have: q|k|v in
    # Wqkv, gate|up in fc1, x|z in Mamba's in_proj. Declared so that quantization configs treat
    # each as one layer (one scheme for all its shards), not as unknown names.
    packed_modules_mapping = {"Wqkv": ["Wqkv"], "fc1": ["fc1"], "in_proj": ["in_proj"]}

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        config = vllm_config.model_config.hf_config
        if not isinstance(config, Phi4FlashConfig):
            # The engine-config hook (vllm_sambay/engine_config.py) converts every config while
            # vLLM plans the engine; reaching this means vLLM did not call it.
            raise TypeError(
                f"Phi4FlashForCausalLM needs vllm_sambay.config.Phi4FlashConfig, got {type(config).__name__}: "
                "vLLM did not run the plugin's engine-config hook (is vllm-sambay registered in this process?)"
            )
        self.config = config
        self.vllm_config = vllm_config
        layer_names = checkpoint_to_module_names(config)
        self.hf_to_vllm_mapper = type(self).hf_to_vllm_mapper | layer_names
        quant_config = vllm_config.quant_config
        if quant_config is not None:  # before any layer asks it: checkpoint layer names -> ours
            quant_config.apply_vllm_mapper(layer_names)
        self.model = SambaYModel(vllm_config=vllm_config, prefix=maybe_prefix(prefix, "model"))
        tied = config.tie_word_embeddings
        self.lm_head = ParallelLMHead(
            config.vocab_size,
            config.hidden_size,
            quant_config=None if tied else quant_config,  # a tied head is the (unquantized) embedding
            prefix=maybe_prefix(prefix, "lm_head"),
        )
        if quant_config is not None and is_checkpoint_quantization(config):
            refuse_config_quantizing_kept_layers(self, quant_config, tied_head=tied)
        if tied:
            self.lm_head = self.lm_head.tie_weights(self.model.embed_tokens)
        self.logits_processor = LogitsProcessor(config.vocab_size)

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.embed_input_ids(input_ids)

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
        return MambaStateDtypeCalculator.mamba1_state_dtype(
            vllm_config.model_config.dtype,
            vllm_config.cache_config.mamba_cache_dtype,
            vllm_config.cache_config.mamba_ssm_cache_dtype,
        )

    @classmethod
    def get_mamba_state_shape_from_config(cls, vllm_config: VllmConfig) -> tuple[tuple[int, int], ...]:
        hf = vllm_config.model_config.hf_config
        return MambaStateShapeCalculator.mamba1_state_shape(
            tp_world_size=vllm_config.parallel_config.tensor_parallel_size,
            intermediate_size=hf.mamba_expand * hf.hidden_size,
            state_size=hf.mamba_d_state,
            conv_kernel=hf.mamba_d_conv,
        )

    @classmethod
    def get_mamba_state_copy_func(cls):
        return MambaStateCopyFuncCalculator.mamba1_state_copy_func()

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        if self.config.tie_word_embeddings:  # the head is the embedding; a stored copy is redundant
            weights = ((name, w) for name, w in weights if not name.startswith("lm_head."))
        return AutoWeightsLoader(self).load_weights(refuse_quantized_tensors(weights), mapper=self.hf_to_vllm_mapper)
