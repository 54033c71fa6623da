"""A small pure-PyTorch SambaY: the project's correctness oracle and executable specification.

No vLLM, no fused kernels, one sequence at a time, every formula written out once and computed in
one dtype (float32 or float64). Two independent paths compute the same logits:

* ``forward`` (the parallel path): the whole sequence at once, causal / sliding masks built from
  positions, a Mamba-1 scan from zero state over the whole sequence;
* ``step`` (the incremental path): appends tokens to a ``SambaYCache`` (Mamba conv + ssm states,
  sliding-window KV trimmed to the window, the global KV of layer N/2+1 that the cross layers read).

Their agreement is a test (tests/unit/test_reference.py). Module and parameter names mirror the
published checkpoint (``model.layers.{i}.attn.inner_cross_attn.subln.weight`` ...), so the
state-dict keys of this module *are* the checkpoint keys. The layer layout always comes from
``Phi4FlashConfig.layer_layout``; nothing here re-derives it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..config import SUBLN_EPS, LayerKind, LayerSpec, Phi4FlashConfig

__all__ = [
    "CheckpointMismatchError",
    "DecoderLayer",
    "DiffAttention",
    "DifferentialCore",
    "GMU",
    "KVCache",
    "MLP",
    "Mamba",
    "MambaState",
    "RMSNorm",
    "SambaYCache",
    "SambaYReference",
    "attention_mask",
]


class CheckpointMismatchError(KeyError):
    """The state dict's keys do not match the SambaY layout for this config."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0])


# ---------------------------------------------------------------------------------------------
# Feed-forward and norms
# ---------------------------------------------------------------------------------------------
class MLP(nn.Module):
    """SwiGLU with a fused fc1: rows [0, I) are the gate, rows [I, 2I) the up projection;
    out = fc2(silu(gate) * up). (Swapping gate and up is a known porting bug.)"""

    def __init__(self, config: Phi4FlashConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(F.silu(gate) * up)


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight over the last dim (no mean subtraction, no bias)."""

    def __init__(self, dim: int, eps: float = SUBLN_EPS) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


# ---------------------------------------------------------------------------------------------
# Mamba-1 (layers 0, 2, ..., N/2)
# ---------------------------------------------------------------------------------------------
@dataclass
class MambaState:
    """Recurrent state of one Mamba layer for one sequence."""

    conv: torch.Tensor  # [d_inner, d_conv - 1]: the last d_conv-1 raw (pre-conv) inputs, oldest first
    ssm: torch.Tensor  # [d_inner, d_state]


class Mamba(nn.Module):
    """Mamba-1 with a per-channel A [d_inner, d_state] (not Mamba-2: no heads, no norms).

        x, z    = in_proj(h)                            x: rows [0, d_inner), z: rows [d_inner, 2 d_inner)
        xc      = silu(causal depthwise conv1d(x))      kernel d_conv, zero left padding, with bias
        dt_low, B, C = x_proj(xc)                       widths dt_rank, d_state, d_state
        dt      = softplus(dt_proj(dt_low))             dt_proj's bias sits inside the softplus
        s_t     = exp(dt_t A) * s_{t-1} + dt_t B_t xc_t     A = -exp(A_log), s_0 = 0
        y_t     = s_t C_t + D xc_t                      the *ungated* output (SambaY's memory)
        out     = out_proj(y * silu(z))

    Both ``forward`` and ``step`` return ``(out, y)``: the layer at N/2 exports y as the memory
    that every GMU layer gates, for the same token.
    """

    def __init__(self, config: Phi4FlashConfig) -> None:
        super().__init__()
        h, di = config.hidden_size, config.mamba_d_inner
        self.d_inner, self.d_state, self.dt_rank = di, config.mamba_d_state, config.mamba_dt_rank
        self.d_conv = config.mamba_d_conv
        self.in_proj = nn.Linear(h, 2 * di, bias=config.mamba_proj_bias)
        self.conv1d = nn.Conv1d(di, di, self.d_conv, groups=di, bias=config.mamba_conv_bias)
        self.x_proj = nn.Linear(di, self.dt_rank + 2 * self.d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, di, bias=True)
        self.A_log = nn.Parameter(torch.zeros(di, self.d_state))
        self.D = nn.Parameter(torch.ones(di))
        self.out_proj = nn.Linear(di, h, bias=config.mamba_proj_bias)

    def _selective_inputs(self, xc: torch.Tensor):
        """Per-token dt [T, d_inner], B [T, d_state], C [T, d_state] (input-dependent: "selective")."""
        dt_low, B, C = self.x_proj(xc).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        return F.softplus(self.dt_proj(dt_low)), B, C

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Parallel path: a whole sequence h [T, hidden] from zero state.
        Returns (out [T, hidden], y [T, d_inner])."""
        T = h.shape[0]
        x, z = self.in_proj(h).chunk(2, dim=-1)
        # Causal depthwise conv over the whole sequence, d_conv-1 zeros on the left: tap k of the
        # kernel multiplies the input d_conv-1-k steps back (the last tap reads the current token).
        x_padded = F.pad(x, (0, 0, self.d_conv - 1, 0))  # [d_conv - 1 + T, d_inner]
        kernel = self.conv1d.weight[:, 0, :]  # [d_inner, d_conv]
        xc = sum(x_padded[k : k + T] * kernel[:, k] for k in range(self.d_conv))
        if self.conv1d.bias is not None:
            xc = xc + self.conv1d.bias
        xc = F.silu(xc)
        dt, B, C = self._selective_inputs(xc)
        A = -torch.exp(self.A_log)
        # The scan, written as the recurrence it is (clarity over speed).
        s = torch.zeros(self.d_inner, self.d_state, dtype=h.dtype)
        ys = []
        for t in range(T):
            s = torch.exp(dt[t, :, None] * A) * s + (dt[t, :, None] * B[t]) * xc[t, :, None]
            ys.append(s @ C[t])
        y = torch.stack(ys) + self.D * xc
        return self.out_proj(y * F.silu(z)), y

    def new_state(self) -> MambaState:
        dtype = self.A_log.dtype
        return MambaState(
            conv=torch.zeros(self.d_inner, self.d_conv - 1, dtype=dtype),
            ssm=torch.zeros(self.d_inner, self.d_state, dtype=dtype),
        )

    def step(self, h: torch.Tensor, state: MambaState) -> tuple[torch.Tensor, torch.Tensor]:
        """Incremental path: tokens h [t, hidden] one at a time through the recurrent form,
        continuing from and updating ``state``. Same return values as ``forward``."""
        x, z = self.in_proj(h).chunk(2, dim=-1)
        kernel = self.conv1d.weight[:, 0, :]  # [d_inner, d_conv]; the last tap multiplies the newest input
        A = -torch.exp(self.A_log)
        ys = []
        for t in range(h.shape[0]):
            window = torch.cat([state.conv, x[t, :, None]], dim=1)  # [d_inner, d_conv], oldest first
            state.conv = window[:, 1:]
            xc = (window * kernel).sum(-1)
            if self.conv1d.bias is not None:
                xc = xc + self.conv1d.bias
            xc = F.silu(xc)
            dt, B, C = (v[0] for v in self._selective_inputs(xc[None]))
            state.ssm = torch.exp(dt[:, None] * A) * state.ssm + (dt[:, None] * B) * xc[:, None]
            ys.append(state.ssm @ C + self.D * xc)
        y = torch.stack(ys)
        return self.out_proj(y * F.silu(z)), y


# ---------------------------------------------------------------------------------------------
# GMU (layers N/2+2, N/2+4, ...)
# ---------------------------------------------------------------------------------------------
class GMU(nn.Module):
    """Gated memory unit: out_proj(memory * silu(in_proj(h))). No state of its own: ``memory`` is
    layer N/2's ungated Mamba output y for the same tokens. (The checkpoint stores these weights
    under the Mamba names ``attn.in_proj`` / ``attn.out_proj``.)"""

    def __init__(self, config: Phi4FlashConfig) -> None:
        super().__init__()
        self.in_proj = nn.Linear(config.hidden_size, config.mamba_d_inner, bias=False)
        self.out_proj = nn.Linear(config.mamba_d_inner, config.hidden_size, bias=False)

    def forward(self, h: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        return self.out_proj(memory * F.silu(self.in_proj(h)))


# ---------------------------------------------------------------------------------------------
# Differential attention (odd layers)
# ---------------------------------------------------------------------------------------------
def attention_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int | None) -> torch.Tensor:
    """visible[i, j]: may the query at absolute position q_pos[i] read the key at k_pos[j]?
    Causal; with a window W the query at t sees t-W+1 .. t (W keys including itself), which is
    flash-attn's window_size=(W-1, 0) and HF's (W-1, W-1) under causal=True."""
    visible = k_pos[None, :] <= q_pos[:, None]
    if window is not None:
        visible &= k_pos[None, :] > q_pos[:, None] - window
    return visible


class DifferentialCore(nn.Module):
    """The part HF calls ``inner_cross_attn``: two softmax maps whose difference is taken.

    Heads are split even/odd *before* grouping: q1 = q[:, 0::2], q2 = q[:, 1::2] (H/2 heads each),
    k1, k2, v1, v2 likewise (KV/2 heads each). Inside each half, plain GQA: q head j of a half reads
    kv head j // ((H/2) / (KV/2)) of that half. (Standard GQA on the unsplit heads, h -> h // (H/KV),
    pairs different heads and is wrong.)

        a1 = [softmax(q1 k1^T / sqrt(d)) v1 | softmax(q1 k1^T / sqrt(d)) v2]       [Tq, H/2, 2d]
        a2 = [softmax(q2 k2^T / sqrt(d)) v1 | softmax(q2 k2^T / sqrt(d)) v2]
        lambda = exp(lambda_q1 . lambda_k1) - exp(lambda_q2 . lambda_k2) + lambda_init(layer)
        O = RMSNorm_2d(a1 - lambda a2) * (1 - lambda_init)

    Row j of O holds output heads 2j (first d) and 2j+1 (last d), so O flattens straight into the
    usual [Tq, H*d] head order.
    """

    def __init__(self, head_dim: int, lambda_init: float) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.lambda_init = lambda_init  # 0.8 - 0.6 exp(-0.3 * global layer index)
        self.lambda_q1 = nn.Parameter(torch.zeros(head_dim))
        self.lambda_k1 = nn.Parameter(torch.zeros(head_dim))
        self.lambda_q2 = nn.Parameter(torch.zeros(head_dim))
        self.lambda_k2 = nn.Parameter(torch.zeros(head_dim))
        self.subln = RMSNorm(2 * head_dim)

    def lam(self) -> torch.Tensor:
        return (
            torch.exp(torch.sum(self.lambda_q1 * self.lambda_k1))
            - torch.exp(torch.sum(self.lambda_q2 * self.lambda_k2))
            + self.lambda_init
        )

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, visible: torch.Tensor):
        """q [Tq, H, d], k/v [Tk, KV, d], visible [Tq, Tk] -> [Tq, H*d]."""
        n_q, n_kv = q.shape[1] // 2, k.shape[1] // 2
        group = n_q // n_kv  # GQA ratio inside each half
        # [Tk, KV/2, 2d]: row g = [v1_g | v2_g], the values that kv head g of either half reads
        v12 = torch.cat([v[:, 0::2], v[:, 1::2]], dim=-1)
        v12 = v12.repeat_interleave(group, dim=1)  # q head j of a half reads kv head j // group

        def half(qh: torch.Tensor, kh: torch.Tensor) -> torch.Tensor:
            kh = kh.repeat_interleave(group, dim=1)
            scores = torch.einsum("qhd,khd->hqk", qh, kh) * self.head_dim**-0.5
            probs = scores.masked_fill(~visible, float("-inf")).softmax(dim=-1)
            return torch.einsum("hqk,khe->qhe", probs, v12)  # [Tq, H/2, 2d]

        a1 = half(q[:, 0::2], k[:, 0::2])
        a2 = half(q[:, 1::2], k[:, 1::2])
        out = self.subln(a1 - self.lam() * a2) * (1 - self.lambda_init)
        return out.reshape(q.shape[0], -1)


class DiffAttention(nn.Module):
    """One attention layer: the fused projection, the differential core, the output projection.

    Self layers (sliding and full): Wqkv -> [q H*d | k KV*d | v KV*d], with bias.
    Cross layers: Wqkv -> q only; K/V are the full layer's (``spec.kv_source``) for every token so
    far. No positional encoding at all (NoPE), so K/V can be shared across layers unchanged.
    """

    def __init__(self, config: Phi4FlashConfig, spec: LayerSpec) -> None:
        super().__init__()
        h = config.hidden_size
        self.num_heads, self.num_kv_heads, self.head_dim = (
            config.num_attention_heads,
            config.num_key_value_heads,
            config.head_dim,
        )
        self.is_cross = spec.kind is LayerKind.CROSS_ATTENTION
        self.window = spec.sliding_window  # None except on SLIDING_ATTENTION layers
        q_out = self.num_heads * self.head_dim
        self.Wqkv = nn.Linear(h, q_out if self.is_cross else q_out + 2 * self.num_kv_heads * self.head_dim)
        self.out_proj = nn.Linear(q_out, h)
        self.inner_cross_attn = DifferentialCore(self.head_dim, spec.lambda_init)

    def project(self, h: torch.Tensor):
        """h [T, hidden] -> q [T, H, d] and k, v [T, KV, d] (None, None for cross layers)."""
        t, hd = h.shape[0], self.head_dim
        qkv = self.Wqkv(h)
        q = qkv[:, : self.num_heads * hd].reshape(t, self.num_heads, hd)
        if self.is_cross:
            return q, None, None
        k, v = qkv[:, self.num_heads * hd :].chunk(2, dim=-1)
        return q, k.reshape(t, self.num_kv_heads, hd), v.reshape(t, self.num_kv_heads, hd)

    def attend(self, q, k, v, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
        """Queries at absolute positions q_pos over keys/values at k_pos -> [Tq, hidden]."""
        visible = attention_mask(q_pos, k_pos, self.window)
        return self.out_proj(self.inner_cross_attn(q, k, v, visible))

    def forward(self, h: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Parallel path for a whole sequence at positions 0..T-1. Cross layers need ``kv``: the
        source layer's (k, v) for the same T tokens."""
        q, k, v = self.project(h)
        if self.is_cross:
            if kv is None:
                raise ValueError("a cross-attention layer needs the K/V of its source layer")
            k, v = kv
        pos = torch.arange(h.shape[0])
        return self.attend(q, k, v, pos, pos)


# ---------------------------------------------------------------------------------------------
# Blocks and the model
# ---------------------------------------------------------------------------------------------
class DecoderLayer(nn.Module):
    """Pre-norm block around any mixer: x += mixer(LN_in(x)); x += MLP(LN_post(x)).
    All norms are nn.LayerNorm with bias (only the subln inside attention is an RMSNorm)."""

    def __init__(self, config: Phi4FlashConfig, spec: LayerSpec) -> None:
        super().__init__()
        self.spec = spec
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        if spec.is_mamba:
            self.attn = Mamba(config)
        elif spec.kind is LayerKind.GMU:
            self.attn = GMU(config)
        else:
            self.attn = DiffAttention(config, spec)
        self.post_attention_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = MLP(config)

    def add_mixer_and_mlp(self, x: torch.Tensor, mixed: torch.Tensor) -> torch.Tensor:
        x = x + mixed
        return x + self.mlp(self.post_attention_layernorm(x))


class SambaYDecoder(nn.Module):
    """Holds what the checkpoint stores under ``model.``."""

    def __init__(self, config: Phi4FlashConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, spec) for spec in config.layer_layout)
        self.final_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)


@dataclass
class KVCache:
    """Keys/values of one self-attention layer for one sequence, with their absolute positions."""

    k: torch.Tensor  # [n, KV, d]
    v: torch.Tensor  # [n, KV, d]
    pos: torch.Tensor  # [n] long

    def append(self, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor) -> None:
        self.k, self.v, self.pos = torch.cat([self.k, k]), torch.cat([self.v, v]), torch.cat([self.pos, pos])

    def keep_last(self, n: int) -> None:
        self.k, self.v, self.pos = self.k[-n:], self.v[-n:], self.pos[-n:]


@dataclass
class SambaYCache:
    """Everything the incremental path keeps for one sequence: a MambaState per Mamba layer, a
    KVCache per self-attention layer (sliding ones hold at most ``window`` tokens, the full
    layer N/2+1 holds every token and is what the cross layers read). GMU and cross layers
    keep nothing."""

    length: int = 0  # tokens consumed so far
    mamba: dict[int, MambaState] = field(default_factory=dict)
    kv: dict[int, KVCache] = field(default_factory=dict)


class SambaYReference(nn.Module):
    """SambaY (Phi-4-mini-flash) for one sequence at a time. See the module docstring.

    ``state_dict`` uses the published HF key names; ``lm_head.weight`` may be present or absent
    (the head is tied to ``model.embed_tokens`` either way), unless the config says
    ``tie_word_embeddings: false`` (a quantized checkpoint with its own head): then it is required.
    ``None`` loads the tiny factory's random weights
    (``vllm_sambay.testing.tiny.random_state_dict(config, seed=0)``). Weights are cast to ``dtype``
    and every computation, residual stream included, runs in it.
    """

    def __init__(
        self,
        config: Phi4FlashConfig,
        state_dict: dict[str, torch.Tensor] | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.config = config
        with torch.device("meta"):  # no random init of weights that are overwritten anyway
            self.model = SambaYDecoder(config)
        self.model.to(dtype).to_empty(device="cpu")
        self.lm_head: nn.Linear | None = None
        if not config.tie_word_embeddings:
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False, dtype=dtype)
        if state_dict is None:
            from .tiny import random_state_dict

            state_dict = random_state_dict(config, seed=0)
        self.load_hf_state_dict(state_dict)
        self.requires_grad_(False)
        self.eval()

    @property
    def dtype(self) -> torch.dtype:
        return self.model.embed_tokens.weight.dtype

    # -- loading --------------------------------------------------------------------------------
    def load_hf_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Strict: every parameter must be given under its published key and nothing else may be
        (except a tied ``lm_head.weight``, which must then equal the embedding)."""
        own = dict(self.named_parameters())
        given = dict(state_dict)
        # Tied: a stored head is a redundant copy. Untied: a parameter like any other.
        lm_head = given.pop("lm_head.weight", None) if self.lm_head is None else None
        missing = sorted(own.keys() - given.keys())
        unexpected = sorted(given.keys() - own.keys())
        if missing or unexpected:
            parts = [f"missing keys {missing}"] if missing else []
            parts += [f"unexpected keys {unexpected}"] if unexpected else []
            raise CheckpointMismatchError(f"state dict does not match the SambaY layout: {'; '.join(parts)}")
        for key, tensor in given.items():
            if tuple(tensor.shape) != tuple(own[key].shape):
                raise ValueError(
                    f"{key}: shape {tuple(tensor.shape)} in the state dict, expected {tuple(own[key].shape)}"
                )
        embed = given["model.embed_tokens.weight"]
        if (
            self.lm_head is None
            and lm_head is not None
            and not (lm_head.shape == embed.shape and torch.equal(lm_head.to(embed.dtype), embed))
        ):
            raise ValueError("lm_head.weight differs from model.embed_tokens.weight, but SambaY ties them")
        with torch.no_grad():
            for key, tensor in given.items():
                own[key].copy_(tensor.to(own[key].dtype))

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: torch.dtype = torch.float32) -> SambaYReference:
        """A checkpoint directory: ``config.json`` plus every ``*.safetensors`` file in it."""
        from safetensors.torch import load_file

        path = Path(path)
        config = Phi4FlashConfig.from_pretrained(str(path))
        files = sorted(path.glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"no *.safetensors files in {path}")
        state: dict[str, torch.Tensor] = {}
        for f in files:
            shard = load_file(str(f))
            if clash := state.keys() & shard.keys():
                raise ValueError(f"keys stored in more than one file: {sorted(clash)[:5]}")
            state.update(shard)
        return cls(config, state, dtype)

    # -- shared pieces --------------------------------------------------------------------------
    @staticmethod
    def _ids(token_ids) -> torch.Tensor:
        ids = torch.as_tensor(token_ids, dtype=torch.long)
        if ids.ndim != 1 or ids.numel() == 0:
            raise ValueError(f"expected a non-empty 1-D sequence of token ids, got shape {tuple(ids.shape)}")
        return ids

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """Final LayerNorm, then the head (tied: the embedding): no bias, no scaling."""
        head = self.model.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return self.model.final_layernorm(x) @ head.t()

    # -- parallel path --------------------------------------------------------------------------
    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, record: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Logits [T, vocab] for one whole sequence (positions 0..T-1).

        ``record``, if given, is filled for debugging layer by layer: ``layers.{i}.mixer_in`` (the
        normed input of layer i's mixer), ``layers.{i}.mixer_out``, ``layers.{i}.out`` (residual
        stream after layer i) and ``memory`` (layer N/2's ungated Mamba output)."""
        ids = self._ids(input_ids)
        pos = torch.arange(ids.shape[0])
        x = self.model.embed_tokens(ids)  # no embedding scaling, no positional encoding
        memory = None
        full_kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for layer in self.model.layers:
            spec, h = layer.spec, layer.input_layernorm(x)
            if spec.is_mamba:
                mixed, y = layer.attn(h)
                if spec.kind is LayerKind.MAMBA_MEMORY:
                    memory = y
            elif spec.kind is LayerKind.GMU:
                mixed = layer.attn(h, memory)
            else:
                q, k, v = layer.attn.project(h)
                if spec.kind is LayerKind.CROSS_ATTENTION:
                    k, v = full_kv[spec.kv_source]
                elif spec.kind is LayerKind.FULL_ATTENTION:
                    full_kv[spec.index] = (k, v)
                mixed = layer.attn.attend(q, k, v, pos, pos)
            x = layer.add_mixer_and_mlp(x, mixed)
            if record is not None:
                record[f"layers.{spec.index}.mixer_in"] = h
                record[f"layers.{spec.index}.mixer_out"] = mixed
                record[f"layers.{spec.index}.out"] = x
        if record is not None and memory is not None:
            record["memory"] = memory
        return self._logits(x)

    # -- incremental path -----------------------------------------------------------------------
    def new_cache(self) -> SambaYCache:
        cache = SambaYCache()
        kv_shape = (0, self.config.num_key_value_heads, self.config.head_dim)
        for layer in self.model.layers:
            spec = layer.spec
            if spec.is_mamba:
                cache.mamba[spec.index] = layer.attn.new_state()
            elif spec.owns_kv:
                empty = torch.zeros(kv_shape, dtype=self.dtype)
                cache.kv[spec.index] = KVCache(empty, empty.clone(), torch.zeros(0, dtype=torch.long))
        return cache

    @torch.no_grad()
    def step(self, token_ids: torch.Tensor, cache: SambaYCache) -> torch.Tensor:
        """Append ``token_ids`` ([t], t >= 1) to the sequence held in ``cache`` and return their
        logits [t, vocab]. A prompt may be fed in one call or in pieces; decoding is t = 1."""
        ids = self._ids(token_ids)
        pos = torch.arange(cache.length, cache.length + ids.shape[0])
        x = self.model.embed_tokens(ids)
        memory = None
        for layer in self.model.layers:
            spec, h = layer.spec, layer.input_layernorm(x)
            if spec.is_mamba:
                mixed, y = layer.attn.step(h, cache.mamba[spec.index])
                if spec.kind is LayerKind.MAMBA_MEMORY:
                    memory = y
            elif spec.kind is LayerKind.GMU:
                mixed = layer.attn(h, memory)
            elif spec.kind is LayerKind.CROSS_ATTENTION:
                q, _, _ = layer.attn.project(h)
                src = cache.kv[spec.kv_source]  # already holds these tokens: layer N/2+1 ran first
                mixed = layer.attn.attend(q, src.k, src.v, pos, src.pos)
            else:
                q, k, v = layer.attn.project(h)
                kv = cache.kv[spec.index]
                kv.append(k, v, pos)
                mixed = layer.attn.attend(q, kv.k, kv.v, pos, kv.pos)
                if spec.sliding_window is not None:
                    # Later queries (positions > pos[-1]) never see further back than this.
                    kv.keep_last(spec.sliding_window)
            x = layer.add_mixer_and_mlp(x, mixed)
        cache.length += ids.shape[0]
        return self._logits(x)

    # -- convenience ----------------------------------------------------------------------------
    @torch.no_grad()
    def greedy_generate(self, prompt_ids: list[int], max_new_tokens: int) -> tuple[list[int], list[float]]:
        """Greedy continuation through the incremental path: the tokens and each chosen token's
        log-probability (log_softmax in float64; ties go to the lowest id)."""
        cache = self.new_cache()
        logits = self.step(torch.tensor(prompt_ids, dtype=torch.long), cache)[-1]
        tokens: list[int] = []
        logprobs: list[float] = []
        for i in range(max_new_tokens):
            logp = torch.log_softmax(logits.double(), dim=-1)
            tok = int(torch.argmax(logp))
            tokens.append(tok)
            logprobs.append(float(logp[tok]))
            if i + 1 < max_new_tokens:
                logits = self.step(torch.tensor([tok]), cache)[-1]
        return tokens, logprobs

    @torch.no_grad()
    def logprobs_of(self, prompt_ids: list[int], continuation: list[int]) -> list[float]:
        """Teacher-forced log-probability of each continuation token (parallel path, float64)."""
        if not prompt_ids:
            raise ValueError("the prompt must hold at least one token")
        if not continuation:
            return []
        logits = self.forward(torch.tensor(list(prompt_ids) + list(continuation), dtype=torch.long))
        logp = torch.log_softmax(logits[len(prompt_ids) - 1 : -1].double(), dim=-1)
        return logp.gather(1, torch.tensor(continuation)[:, None]).squeeze(1).tolist()
