"""Differential attention on vLLM's paged KV cache, as ONE standard attention call.

Differential attention splits heads into an even half (q1, k1, v1) and an odd half (q2, k2,
v2); each query half attends over its own key half (GQA inside the half) and reads BOTH value
halves:  a1 = softmax(q1 k1^T) [v1 | v2],  a2 = softmax(q2 k2^T) [v1 | v2].

Packing each KV group g as one head of width 2d, K'_g = [k1_g | k2_g] and V'_g = [v1_g | v2_g],
and zero-padding the queries, [q1 | 0] and [0 | q2], turns this into a single ordinary GQA
attention with head size 2d over num_kv_heads / 2 heads: the zero half of each query selects its
key half, and every query reads both value halves at once. The cache holds exactly the bytes of
the original K/V (no padding stored), every K/V byte is read once per layer, and any vLLM
backend (CPU_ATTN, FlashAttention, Triton) runs it with its own sliding window, chunked prefill,
prefix caching and cross-layer KV sharing. The only waste is the zero half of each query.
"""

from __future__ import annotations

import torch
from torch import nn
from vllm.config import CacheConfig
from vllm.distributed import get_tensor_model_parallel_world_size
from vllm.model_executor.layers.attention import Attention
from vllm.model_executor.layers.linear import ColumnParallelLinear, QKVParallelLinear, RowParallelLinear
from vllm.model_executor.layers.quantization import QuantizationConfig

from ..config import SUBLN_EPS, LayerKind, LayerSpec, Phi4FlashConfig


def pack_query(q: torch.Tensor, num_heads: int, num_kv_heads: int, head_dim: int) -> torch.Tensor:
    """[T, H*d] -> [T, H*2d]: for each packed KV group g, its q1 heads as [q1|0], then its q2
    heads as [0|q2], so that standard GQA (q head h -> kv head h // (2H/KV)) pairs them with
    K'_g = [k1_g | k2_g]."""
    t, d = q.shape[0], head_dim
    groups, group_size = num_kv_heads // 2, num_heads // num_kv_heads
    q = q.view(t, num_heads, d)
    q1 = q[:, 0::2].reshape(t, groups, group_size, d)
    q2 = q[:, 1::2].reshape(t, groups, group_size, d)
    zeros = torch.zeros_like(q1)
    packed = torch.cat([torch.cat([q1, zeros], -1), torch.cat([zeros, q2], -1)], dim=2)
    return packed.reshape(t, num_heads * 2 * d)


def unpack_output(
    out: torch.Tensor, num_heads: int, num_kv_heads: int, head_dim: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """[T, H*2d] -> (a1, a2), each [T, H/2, 2d], in the order of the q1 (even) / q2 (odd) heads.
    The packed K/V need no function: heads 2g and 2g+1 are adjacent in the projection output,
    so [T, KV*d] already is [T, KV/2, 2d] with group g = [x1_g | x2_g]."""
    t = out.shape[0]
    groups, group_size = num_kv_heads // 2, num_heads // num_kv_heads
    out = out.view(t, groups, 2, group_size, 2 * head_dim)
    a1 = out[:, :, 0].reshape(t, num_heads // 2, 2 * head_dim)
    a2 = out[:, :, 1].reshape(t, num_heads // 2, 2 * head_dim)
    return a1, a2


class DifferentialAttention(nn.Module):
    """Self (sliding or global) or cross differential attention of one SambaY layer."""

    def __init__(
        self,
        config: Phi4FlashConfig,
        spec: LayerSpec,
        *,
        cache_config: CacheConfig | None = None,
        quant_config: QuantizationConfig | None = None,
        kv_sharing_target: str | None = None,
        prefix: str = "",
    ) -> None:
        """``kv_sharing_target``: for a cross-attention layer, the name of the vLLM ``Attention``
        module whose KV cache it reads (the global layer's)."""
        super().__init__()
        tp = get_tensor_model_parallel_world_size()
        hidden = config.hidden_size
        self.head_dim = d = hidden // config.num_attention_heads
        self.total_heads = config.num_attention_heads
        self.total_kv_heads = config.num_key_value_heads
        self.num_heads = self.total_heads // tp
        self.num_kv_heads = self.total_kv_heads // tp
        self.groups = self.num_kv_heads // 2  # packed KV heads of width 2d on this rank
        self.group_size = self.num_heads // self.num_kv_heads  # q heads per kv head, per half
        self.is_cross = spec.kind is LayerKind.CROSS_ATTENTION
        self.lambda_init = spec.lambda_init

        if self.is_cross:
            self.Wqkv = ColumnParallelLinear(
                hidden, self.total_heads * d, bias=True, quant_config=quant_config, prefix=f"{prefix}.Wqkv"
            )
        else:
            self.Wqkv = QKVParallelLinear(
                hidden,
                d,
                self.total_heads,
                self.total_kv_heads,
                bias=True,
                quant_config=quant_config,
                prefix=f"{prefix}.Wqkv",
            )
        self.out_proj = RowParallelLinear(
            self.total_heads * d, hidden, bias=True, quant_config=quant_config, prefix=f"{prefix}.out_proj"
        )
        # Checkpoint: attn.inner_cross_attn.{lambda_*, subln.weight}; the loader drops the
        # "inner_cross_attn." level.
        for name in ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"):
            setattr(self, name, nn.Parameter(torch.zeros(d, dtype=torch.float32)))
        self.subln = _SubLN(2 * d)

        if self.is_cross != (kv_sharing_target is not None):
            raise ValueError(f"{prefix}: a cross-attention layer and only it reads another layer's KV")
        self.attn = Attention(
            num_heads=self.num_heads,
            head_size=2 * d,
            scale=d**-0.5,
            num_kv_heads=self.groups,
            cache_config=cache_config,
            quant_config=quant_config,
            per_layer_sliding_window=spec.sliding_window,
            prefix=f"{prefix}.attn",
            kv_sharing_target_layer_name=kv_sharing_target,
        )

    def pack_query(self, q: torch.Tensor) -> torch.Tensor:
        return pack_query(q, self.num_heads, self.num_kv_heads, self.head_dim)

    def unpack_output(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return unpack_output(out, self.num_heads, self.num_kv_heads, self.head_dim)

    def lambda_full(self) -> torch.Tensor:
        lam1 = torch.exp(torch.sum(self.lambda_q1.float() * self.lambda_k1.float()))
        lam2 = torch.exp(torch.sum(self.lambda_q2.float() * self.lambda_k2.float()))
        return lam1 - lam2 + self.lambda_init

    def combine(self, a1: torch.Tensor, a2: torch.Tensor) -> torch.Tensor:
        """subln(a1 - lambda * a2) * (1 - lambda_init), heads re-interleaved -> [T, H*d]."""
        diff = a1.float() - self.lambda_full() * a2.float()
        out = self.subln(diff) * (1.0 - self.lambda_init)
        return out.to(a1.dtype).reshape(a1.shape[0], -1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        qkv, _ = self.Wqkv(hidden_states)
        q_size = self.num_heads * self.head_dim
        if self.is_cross:
            q, k, v = qkv, None, None
        else:
            kv_size = self.num_kv_heads * self.head_dim
            # Packed K'/V' are the projection output as it is (see unpack_output).
            q, k, v = qkv.split([q_size, kv_size, kv_size], dim=-1)
        out = self.attn(self.pack_query(q), k, v)
        a1, a2 = self.unpack_output(out)
        y, _ = self.out_proj(self.combine(a1, a2))
        return y


class _SubLN(nn.Module):
    """RMSNorm over 2*head_dim, computed in float32."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + SUBLN_EPS)
        return x * self.weight.float()
