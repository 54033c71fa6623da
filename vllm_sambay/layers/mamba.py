"""Mamba-1 mixer of SambaY as a vLLM ``MambaBase`` layer (conv + ssm state slots).

It reuses vLLM's ``MambaMixer`` for parameters, weight loaders, state shape/dtype and the
``vllm::mamba_mixer`` custom op (a CUDA-graph split point), and replaces the forward: the
kernels come from :mod:`vllm_sambay.ops` (torch on CPU, vLLM CUDA kernels on GPU), and the
memory layer (index N/2) also returns the ungated scan output, written into extra columns of
the op's output buffer.

``MambaMixer`` takes no quantization config (in 0.26 .. 0.34), so with one the layer rebuilds
``in_proj`` and ``out_proj`` (96 % of its weights) as the same vLLM linear layers with it;
``x_proj``, ``dt_proj`` and ``conv1d`` stay unquantized (:mod:`vllm_sambay.quantization`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from vllm.config import CacheConfig, ModelConfig
from vllm.distributed import get_tensor_model_parallel_world_size
from vllm.forward_context import get_forward_context
from vllm.model_executor.layers.linear import MergedColumnParallelLinear, RowParallelLinear
from vllm.model_executor.layers.mamba.mamba_mixer import MambaMixer
from vllm.model_executor.layers.mamba.mamba_utils import is_conv_state_dim_first
from vllm.model_executor.layers.quantization import QuantizationConfig
from vllm.platforms import current_platform
from vllm.v1.attention.backends.mamba1_attn import Mamba1AttentionMetadata

from .. import compat
from ..config import LayerKind, LayerSpec, Phi4FlashConfig
from ..ops import select_mamba_ops


def conv_state_view(conv_state: torch.Tensor) -> torch.Tensor:
    """The conv state as [slots, dim, d_conv - 1], a view of the cache in either layout.

    Not a release difference but a run-time one, in every supported release: the layout is
    ``VLLM_SSM_CONV_STATE_LAYOUT`` ("SD" by default), and vLLM's CPU platform may force it."""
    return conv_state if is_conv_state_dim_first() else conv_state.transpose(-1, -2)


def conv_taps(conv1d: torch.nn.Module) -> torch.Tensor:
    """The depthwise conv weight as [dim, d_conv], whatever vLLM did to the parameter.

    On a CPU with bf16 dot products (avx512_bf16, or Arm bf16), vLLM's unquantized linear method
    repacks a bf16 ``[dim, 1, 4]`` conv1d weight after loading for its own C++ conv kernel
    (``dispatch_cpu_unquantized_gemm``, in 0.26 .. 0.34) and keeps the plain taps in
    ``_cpu_unpacked_conv_weight``; reading ``weight`` there gives the packed bytes. Found when bf16
    on this CPU diverged from float32 from the first Mamba layer on."""
    unpacked = getattr(conv1d, "_cpu_unpacked_conv_weight", None)
    if unpacked is not None:
        return unpacked
    weight = conv1d.weight
    if weight.dim() != 3 or weight.shape[1] != 1:
        raise RuntimeError(f"conv1d weight of shape {tuple(weight.shape)} is not [dim, 1, d_conv] taps")
    return weight.view(weight.shape[0], -1)


class SambaYMamba(MambaMixer):
    def __init__(
        self,
        config: Phi4FlashConfig,
        spec: LayerSpec,
        *,
        model_config: ModelConfig | None = None,
        cache_config: CacheConfig | None = None,
        quant_config: QuantizationConfig | None = None,
        prefix: str = "",
    ) -> None:
        super().__init__(
            hidden_size=config.hidden_size,
            ssm_state_size=config.mamba_d_state,
            conv_kernel_size=config.mamba_d_conv,
            intermediate_size=config.mamba_d_inner,
            time_step_rank=config.mamba_dt_rank,
            use_conv_bias=config.mamba_conv_bias,
            use_bias=config.mamba_proj_bias,
            use_rms_norm=False,
            model_config=model_config,
            cache_config=cache_config,
            prefix=prefix,
        )
        if quant_config is not None:  # same layers, shapes and weight loaders as MambaMixer's, quantized
            self.in_proj = MergedColumnParallelLinear(
                config.hidden_size,
                [config.mamba_d_inner] * 2,
                bias=config.mamba_proj_bias,
                quant_config=quant_config,
                prefix=f"{prefix}.in_proj",
            )
            self.out_proj = RowParallelLinear(
                config.mamba_d_inner,
                config.hidden_size,
                bias=config.mamba_proj_bias,
                input_is_parallel=True,
                quant_config=quant_config,
                prefix=f"{prefix}.out_proj",
            )
        self.hidden_size = config.hidden_size
        self.emits_memory = spec.kind is LayerKind.MAMBA_MEMORY
        self.local_inner = config.mamba_d_inner // get_tensor_model_parallel_world_size()
        # Resolved once here: the forward path reads no environment and imports nothing.
        self.ops = select_mamba_ops(current_platform.is_cuda())

    def output_width(self) -> int:
        """Columns of the op's output buffer: hidden (+ this rank's memory channels)."""
        return self.hidden_size + (self.local_inner if self.emits_memory else 0)

    def forward_impl(self, hidden_states: torch.Tensor, output: torch.Tensor) -> None:
        attn_metadata = get_forward_context().attn_metadata
        meta = attn_metadata.get(self.prefix) if isinstance(attn_metadata, dict) else None
        if meta is not None and not isinstance(meta, Mamba1AttentionMetadata):
            raise TypeError(f"{self.prefix}: expected Mamba1AttentionMetadata, got {type(meta).__name__}")
        xz, _ = self.in_proj(hidden_states)
        x, z = xz.chunk(2, dim=-1)
        if meta is None:  # profiling run: shapes only
            y = x
            n = hidden_states.shape[0]
        else:
            y, n = self._mix(x, meta)
        gated = y * F.silu(z[:n])
        out, _ = self.out_proj(gated)
        output[:n, : self.hidden_size] = out
        if self.emits_memory:
            output[:n, self.hidden_size :] = y

    def _mix(self, x: torch.Tensor, meta: Mamba1AttentionMetadata) -> tuple[torch.Tensor, int]:
        """Conv + selective scan over the batch (decode rows first, then prefill rows); returns
        the ungated scan output y (including D*x) for the real tokens, and their count."""
        ops = self.ops
        conv_state, ssm_state = compat.mamba_states(self)
        conv_state = conv_state_view(conv_state)
        weight = conv_taps(self.conv1d)
        bias = self.conv1d.bias
        dt_bias = self.dt_proj.bias
        nd, np_ = meta.num_decode_tokens, meta.num_prefill_tokens
        parts = []
        if nd:
            idx = meta.state_indices_tensor_d
            idx = idx[:, 0] if idx.dim() == 2 else idx
            xc = ops.causal_conv1d_step(x[:nd], weight, bias, conv_state, idx)
            dt, B, C = self._ssm_params(xc)
            parts.append(ops.selective_state_step(ssm_state, xc, dt, self.A, B, C, self.D, None, dt_bias, idx))
        if np_:
            xp = x[nd : nd + np_]
            idx = meta.state_indices_tensor_p
            has_init = meta.has_initial_states_p
            qsl = meta.query_start_loc_p
            xc = ops.causal_conv1d_varlen(xp, weight, bias, conv_state, idx, has_init, qsl, metadata=meta)
            dt, B, C = self._ssm_params(xc)
            parts.append(
                ops.selective_scan_varlen(
                    xc, dt, self.A, B, C, self.D, None, dt_bias, ssm_state, idx, has_init, qsl, metadata=meta
                )
            )
        y = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
        return y, nd + np_

    def _ssm_params(self, xc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        params, _ = self.x_proj(xc)
        dt_low, B, C = torch.split(params, [self.time_step_rank, self.ssm_state_size, self.ssm_state_size], dim=-1)
        dt, _ = self.dt_proj(dt_low.contiguous())  # bias is added inside the scan
        return dt, B.contiguous(), C.contiguous()
