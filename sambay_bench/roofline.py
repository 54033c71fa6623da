"""The HBM roofline of a decode step (docs/benchmark-method.md, "What the hardware allows").

Decode is memory-bound: a step can be no faster than the bytes it must read divided by the HBM
bandwidth. Those bytes are every weight once, plus per sequence its KV context (the window on
sliding layers, everything on full and cross layers) and its recurrent state (read and written).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .models import config_dict, sambay_config

# Peak HBM bandwidth from the vendors' data sheets, TB/s, matched against torch's device name in
# this order (the first substring that matches wins, so the more specific names come first).
HBM_TBPS = (
    ("GH200", 4.0),
    ("H200", 4.8),
    ("H100 NVL", 3.9),
    ("H100 PCIe", 2.0),
    ("H100", 3.35),
    ("H800", 3.35),
    ("B200", 8.0),
    ("A100-SXM4-80GB", 2.039),
    ("A100 80GB PCIe", 1.935),
    ("A100", 1.555),
    ("L40S", 0.864),
)


def hbm_tbps(device_name: str | None) -> float | None:
    """Peak bandwidth of a known GPU, None for anything else (CPU included)."""
    for key, tbps in HBM_TBPS:
        if device_name and key in device_name:
            return tbps
    return None


@dataclass(frozen=True)
class DecodeBytes:
    """Bytes a decode step reads from HBM (ideal kernels, each byte once), in the model dtype."""

    params: int  # unique parameters (the tied head counted once): all of them are read every step
    dtype_bytes: int
    kv_token_bytes: int  # K and V of one token in one attention layer that owns a cache
    full_kv_reads: int  # layers that read the whole context of a full-attention cache per step
    window_kv_reads: int  # layers that read at most ``window`` tokens
    window: int | None
    state_bytes: int  # recurrent state per sequence (all Mamba layers); read and written every step

    @property
    def weight_bytes(self) -> int:
        return self.params * self.dtype_bytes

    def per_sequence(self, context: int) -> int:
        window = min(context, self.window or context)
        return (
            self.kv_token_bytes * (self.full_kv_reads * context + self.window_kv_reads * window) + 2 * self.state_bytes
        )

    def per_step(self, batch: int, context: int) -> int:
        return self.weight_bytes + batch * self.per_sequence(context)

    def to_dict(self) -> dict[str, Any]:
        return {
            "params": self.params,
            "weight_bytes": self.weight_bytes,
            "kv_token_bytes": self.kv_token_bytes,
            "full_kv_reads": self.full_kv_reads,
            "window_kv_reads": self.window_kv_reads,
            "window": self.window,
            "state_bytes": self.state_bytes,
        }


def decode_bytes(model: str, size: str, dtype_bytes: int = 2) -> DecodeBytes:
    """From the config, with the parameter count taken from the real module tree on the meta device
    (the reference for SambaY, transformers' Phi3 for the dense model), not from a hand formula."""
    if model == "sambay":
        from vllm_sambay.config import LayerKind
        from vllm_sambay.testing.reference import SambaYDecoder

        cfg = sambay_config(size)
        with torch.device("meta"):
            params = sum(p.numel() for p in SambaYDecoder(cfg).parameters())
        kinds = [spec.kind for spec in cfg.layer_layout]
        d_inner = cfg.mamba_d_inner
        n_mamba = sum(spec.is_mamba for spec in cfg.layer_layout)
        full = sum(k in (LayerKind.FULL_ATTENTION, LayerKind.CROSS_ATTENTION) for k in kinds)
        return DecodeBytes(
            params=params,
            dtype_bytes=dtype_bytes,
            kv_token_bytes=2 * cfg.num_key_value_heads * cfg.head_dim * dtype_bytes,
            full_kv_reads=full,
            window_kv_reads=kinds.count(LayerKind.SLIDING_ATTENTION),
            window=cfg.sliding_window,
            state_bytes=n_mamba * d_inner * (cfg.mamba_d_conv - 1 + cfg.mamba_d_state) * dtype_bytes,
        )
    from transformers import Phi3Config, Phi3ForCausalLM

    d = config_dict(model, size)
    cfg = Phi3Config(**{k: v for k, v in d.items() if k not in ("architectures", "model_type", "torch_dtype")})
    with torch.device("meta"):
        params = sum(p.numel() for p in Phi3ForCausalLM(cfg).parameters())
    head_dim = d["hidden_size"] // d["num_attention_heads"]
    return DecodeBytes(
        params=params,
        dtype_bytes=dtype_bytes,
        kv_token_bytes=2 * d["num_key_value_heads"] * head_dim * dtype_bytes,
        full_kv_reads=d["num_hidden_layers"],
        window_kv_reads=0,
        window=None,
        state_bytes=0,
    )


def roofline_ms(step_bytes: int, tbps: float | None) -> float | None:
    return None if not tbps else step_bytes / (tbps * 1e12) * 1e3
