"""A small pure-PyTorch SambaY: the project's oracle and executable specification.

No vLLM, no fused kernels: every formula is written out once, for one sequence at a time, in
float32 or float64. Two independent paths compute the same thing:
- ``forward``: the whole sequence at once (causal masks, a full Mamba-1 scan);
- ``step``: incremental decoding with explicit caches (Mamba conv/ssm state, sliding-window KV
  keeping only the last ``window`` tokens, the global KV that the cross-decoder reads).
Their agreement is itself a test. The layer layout comes from ``Phi4FlashConfig.layer_layout``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .config import LayerKind, LayerSpec, Phi4FlashConfig


# ---------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------
class MLP(nn.Module):
    """SwiGLU with a fused fc1: gate rows first, then up rows; out = fc2(silu(gate) * up)."""

    def __init__(self, config: Phi4FlashConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(F.silu(gate) * up)


@dataclass
class MambaCache:
    conv: torch.Tensor  # [d_inner, d_conv - 1] last raw inputs, oldest first
    ssm: torch.Tensor  # [d_inner, d_state]


class Mamba(nn.Module):
    """Mamba-1 with per-channel A. ``forward`` returns (output, y) where y is the ungated scan
    output (including D*x): layer N/2 exports it as the memory of the GMU layers."""

    def __init__(self, config: Phi4FlashConfig) -> None:
        super().__init__()
        h, di, n, r = config.hidden_size, config.mamba_d_inner, config.mamba_d_state, config.mamba_dt_rank
        self.d_conv = config.mamba_d_conv
        self.in_proj = nn.Linear(h, 2 * di, bias=config.mamba_proj_bias)
        self.conv1d = nn.Conv1d(di, di, self.d_conv, groups=di, bias=config.mamba_conv_bias)
        self.x_proj = nn.Linear(di, r + 2 * n, bias=False)
        self.dt_proj = nn.Linear(r, di, bias=True)
        self.A_log = nn.Parameter(torch.zeros(di, n))
        self.D = nn.Parameter(torch.ones(di))
        self.out_proj = nn.Linear(di, h, bias=config.mamba_proj_bias)
        self.dt_rank, self.d_state = r, n

    def _ssm_inputs(self, xc: torch.Tensor):
        dt_low, B, C = self.x_proj(xc).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.softplus(self.dt_proj(dt_low))  # [T, d_inner], bias inside the softplus
        return delta, B, C, -torch.exp(self.A_log)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Whole sequence from zero state. h: [T, hidden]."""
        x, z = self.in_proj(h).chunk(2, dim=-1)
        xc = F.silu(self.conv1d(F.pad(x.t(), (self.d_conv - 1, 0)).unsqueeze(0)).squeeze(0).t())
        delta, B, C, A = self._ssm_inputs(xc)
        state = torch.zeros_like(A)
        ys = []
        for t in range(h.shape[0]):
            state = torch.exp(delta[t, :, None] * A) * state + delta[t, :, None] * B[t] * xc[t, :, None]
            ys.append(state @ C[t])
        y = torch.stack(ys) + self.D * xc
        return self.out_proj(y * F.silu(z)), y

    def new_cache(self) -> MambaCache:
        di, dtype = self.D.shape[0], self.D.dtype
        return MambaCache(torch.zeros(di, self.d_conv - 1, dtype=dtype), torch.zeros(di, self.d_state, dtype=dtype))

    def step(self, h: torch.Tensor, cache: MambaCache) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens one at a time through the recurrent form, updating ``cache``."""
        x, z = self.in_proj(h).chunk(2, dim=-1)
        w = self.conv1d.weight[:, 0, :]  # [d_inner, d_conv]
        outs = []
        for t in range(h.shape[0]):
            window = torch.cat([cache.conv, x[t, :, None]], dim=1)  # [d_inner, d_conv]
            cache.conv = window[:, 1:]
            xc = F.silu((window * w).sum(-1) + (self.conv1d.bias if self.conv1d.bias is not None else 0))
            delta, B, C, A = self._ssm_inputs(xc[None])
            cache.ssm = torch.exp(delta[0, :, None] * A) * cache.ssm + delta[0, :, None] * B[0] * xc[:, None]
            outs.append(cache.ssm @ C[0] + self.D * xc)
        y = torch.stack(outs)
        return self.out_proj(y * F.silu(z)), y


class GMU(nn.Module):
    """Gated memory unit: out_proj(memory * silu(in_proj(h)))."""

    def __init__(self, config: Phi4FlashConfig) -> None:
        super().__init__()
        self.in_proj = nn.Linear(config.hidden_size, config.mamba_d_inner, bias=False)
        self.out_proj = nn.Linear(config.mamba_d_inner, config.hidden_size, bias=False)

    def forward(self, h: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        return self.out_proj(memory * F.silu(self.in_proj(h)))


class DiffAttention(nn.Module):
    """Differential attention. Heads split even/odd (q1 = heads 0,2,4..; q2 = 1,3,5..), GQA
    inside each half, both value halves read by both query halves:
        a1 = softmax(q1 k1^T / sqrt(d)) [v1 | v2],  a2 = softmax(q2 k2^T / sqrt(d)) [v1 | v2]
        lambda = exp(lq1 . lk1) - exp(lq2 . lk2) + lambda_init(layer)
        out head pair (2j, 2j+1) = RMSNorm_2d(a1_j - lambda a2_j) * (1 - lambda_init)
    Cross layers project queries only and attend over the global layer's K/V."""

    def __init__(self, config: Phi4FlashConfig, spec: LayerSpec) -> None:
        super().__init__()
        h = config.hidden_size
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.d = h // self.heads
        self.is_cross = spec.kind is LayerKind.CROSS_ATTENTION
        self.window = spec.sliding_window
        self.lambda_init = spec.lambda_init
        out = h if self.is_cross else h + 2 * self.kv_heads * self.d
        self.Wqkv = nn.Linear(h, out, bias=True)
        self.out_proj = nn.Linear(h, h, bias=True)
        self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2 = (
            nn.Parameter(torch.zeros(self.d)) for _ in range(4)
        )
        self.subln_weight = nn.Parameter(torch.ones(2 * self.d))

    def project(self, h: torch.Tensor):
        """q [T, H, d] and, for self layers, k, v [T, KV, d]."""
        qkv = self.Wqkv(h)
        t = h.shape[0]
        q = qkv[:, : self.heads * self.d].view(t, self.heads, self.d)
        if self.is_cross:
            return q, None, None
        k, v = qkv[:, self.heads * self.d :].chunk(2, dim=-1)
        return q, k.reshape(t, self.kv_heads, self.d), v.reshape(t, self.kv_heads, self.d)

    def attend(self, q, k, v, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
        """q [Tq, H, d] at absolute positions q_pos; k, v [Tk, KV, d] at k_pos -> [Tq, hidden]."""
        visible = k_pos[None, :] <= q_pos[:, None]
        if self.window is not None:
            visible &= k_pos[None, :] > q_pos[:, None] - self.window
        group = (self.heads // 2) // (self.kv_heads // 2)

        def half(qh, kh):  # softmax(q k^T) for one half, GQA inside the half
            kh = kh.repeat_interleave(group, dim=1)  # q head j of the half -> kv head j // group
            scores = torch.einsum("qhd,khd->hqk", qh, kh) * self.d**-0.5
            return scores.masked_fill(~visible, float("-inf")).softmax(-1)

        v_both = torch.cat([v[:, 0::2], v[:, 1::2]], dim=-1).repeat_interleave(group, dim=1)  # [Tk, H/2, 2d]
        a1 = torch.einsum("hqk,khe->qhe", half(q[:, 0::2], k[:, 0::2]), v_both)
        a2 = torch.einsum("hqk,khe->qhe", half(q[:, 1::2], k[:, 1::2]), v_both)
        lam = (
            torch.exp(torch.dot(self.lambda_q1, self.lambda_k1))
            - torch.exp(torch.dot(self.lambda_q2, self.lambda_k2))
            + self.lambda_init
        )
        diff = a1 - lam * a2
        normed = diff * torch.rsqrt(diff.pow(2).mean(-1, keepdim=True) + 1e-5) * self.subln_weight
        out = normed * (1 - self.lambda_init)  # [Tq, H/2, 2d]: pair j = heads (2j, 2j+1)
        return self.out_proj(out.reshape(q.shape[0], -1))


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------
class Block(nn.Module):
    def __init__(self, config: Phi4FlashConfig, spec: LayerSpec) -> None:
        super().__init__()
        self.spec = spec
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_attention_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = MLP(config)
        if spec.is_mamba:
            self.attn = Mamba(config)
        elif spec.kind is LayerKind.GMU:
            self.attn = GMU(config)
        else:
            self.attn = DiffAttention(config, spec)

    def finish(self, x: torch.Tensor, mixed: torch.Tensor) -> torch.Tensor:
        x = x + mixed
        return x + self.mlp(self.post_attention_layernorm(x))


@dataclass
class Cache:
    """Everything incremental decoding keeps for one sequence."""

    length: int = 0
    mamba: dict[int, MambaCache] = field(default_factory=dict)
    kv: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # k, v, pos


class SambaYReference(nn.Module):
    def __init__(
        self,
        config: Phi4FlashConfig,
        state_dict: dict[str, torch.Tensor] | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Block(config, spec) for spec in config.layer_layout)
        self.final_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.to(dtype)
        if state_dict is not None:
            self.load_hf_state_dict(state_dict)
        self.eval()

    # -- loading --------------------------------------------------------------------------------
    @staticmethod
    def _hf_name(name: str) -> str:
        """Our parameter name -> the published checkpoint key."""
        if name.startswith("layers."):
            name = "model." + name
            name = name.replace(".attn.lambda_", ".attn.inner_cross_attn.lambda_")
            name = name.replace(".attn.subln_weight", ".attn.inner_cross_attn.subln.weight")
        elif not name.startswith("lm_head"):
            name = "model." + name
        return name

    def load_hf_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        own = dict(self.named_parameters())
        wanted = {self._hf_name(n): n for n in own}
        given = {k: v for k, v in state_dict.items() if k != "lm_head.weight"}
        missing = sorted(set(wanted) - set(given))
        unexpected = sorted(set(given) - set(wanted))
        if missing or unexpected:
            raise KeyError(f"checkpoint does not match the SambaY layout: missing {missing}, unexpected {unexpected}")
        with torch.no_grad():
            for key, tensor in given.items():
                param = own[wanted[key]]
                if param.shape != tensor.shape:
                    raise ValueError(f"{key}: checkpoint shape {tuple(tensor.shape)} != {tuple(param.shape)}")
                param.copy_(tensor.to(param.dtype))

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: torch.dtype = torch.float32) -> SambaYReference:
        from safetensors.torch import load_file

        path = Path(path)
        config = Phi4FlashConfig(**json.loads((path / "config.json").read_text()))
        files = sorted(path.glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"no *.safetensors in {path}")
        state: dict[str, torch.Tensor] = {}
        for f in files:
            state.update(load_file(f))
        return cls(config, state, dtype)

    # -- full sequence --------------------------------------------------------------------------
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_layernorm(x) @ self.embed_tokens.weight.t()  # tied head

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Logits [T, vocab] for one whole sequence."""
        x = self.embed_tokens(input_ids)
        pos = torch.arange(input_ids.shape[0])
        memory = None
        kv_of: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for block in self.layers:
            spec, h = block.spec, block.input_layernorm(x)
            if spec.is_mamba:
                mixed, y = block.attn(h)
                if spec.kind is LayerKind.MAMBA_MEMORY:
                    memory = y
            elif spec.kind is LayerKind.GMU:
                mixed = block.attn(h, memory)
            else:
                q, k, v = block.attn.project(h)
                if spec.kind is LayerKind.CROSS_ATTENTION:
                    k, v = kv_of[spec.kv_source]
                kv_of[spec.index] = (k, v)
                mixed = block.attn.attend(q, k, v, pos, pos)
            x = block.finish(x, mixed)
        return self.logits(x)

    # -- incremental ----------------------------------------------------------------------------
    def new_cache(self) -> Cache:
        return Cache()

    @torch.no_grad()
    def step(self, token_ids: torch.Tensor, cache: Cache) -> torch.Tensor:
        """Append ``token_ids`` ([t], t >= 1) to the sequence in ``cache``; logits [t, vocab]."""
        t = token_ids.shape[0]
        pos = torch.arange(cache.length, cache.length + t)
        x = self.embed_tokens(token_ids)
        memory = None
        for block in self.layers:
            spec, h = block.spec, block.input_layernorm(x)
            if spec.is_mamba:
                mc = cache.mamba.setdefault(spec.index, block.attn.new_cache())
                mixed, y = block.attn.step(h, mc)
                if spec.kind is LayerKind.MAMBA_MEMORY:
                    memory = y
            elif spec.kind is LayerKind.GMU:
                mixed = block.attn(h, memory)
            else:
                q, k, v = block.attn.project(h)
                if spec.kind is LayerKind.CROSS_ATTENTION:
                    k_all, v_all, k_pos = cache.kv[spec.kv_source]
                else:
                    k_all, v_all, k_pos = k, v, pos
                    if spec.index in cache.kv:
                        k0, v0, p0 = cache.kv[spec.index]
                        k_all, v_all, k_pos = torch.cat([k0, k]), torch.cat([v0, v]), torch.cat([p0, pos])
                    kept = (k_all, v_all, k_pos)
                    if spec.sliding_window is not None:  # no later query sees further back
                        kept = tuple(a[-spec.sliding_window :] for a in kept)
                    cache.kv[spec.index] = kept
                mixed = block.attn.attend(q, k_all, v_all, pos, k_pos)
            x = block.finish(x, mixed)
        cache.length += t
        return self.logits(x)

    @torch.no_grad()
    def greedy_generate(self, prompt_ids: list[int], max_new_tokens: int) -> tuple[list[int], list[float]]:
        """Greedy tokens and each chosen token's log-probability, via the incremental path."""
        cache = self.new_cache()
        logits = self.step(torch.tensor(prompt_ids, dtype=torch.long), cache)[-1]
        tokens, logprobs = [], []
        for _ in range(max_new_tokens):
            logp = torch.log_softmax(logits.double(), dim=-1)
            tok = int(logp.argmax())
            tokens.append(tok)
            logprobs.append(float(logp[tok]))
            logits = self.step(torch.tensor([tok]), cache)[-1]
        return tokens, logprobs
