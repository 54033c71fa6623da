"""The reference model: its two paths agree, and each architectural detail is pinned by a check
that a plausible mistake would fail."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from vllm_sambay.config import LayerKind
from vllm_sambay.reference import DiffAttention, SambaYReference
from vllm_sambay.tiny import random_state_dict, tiny_config


@pytest.fixture(scope="module")
def config():
    return tiny_config(512)


@pytest.fixture(scope="module")
def state(config):
    return random_state_dict(config, seed=0)


@pytest.fixture(scope="module")
def ref64(config, state):
    return SambaYReference(config, state, torch.float64)


def ids(n, seed=0, vocab=512):
    return torch.randint(10, vocab, (n,), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("pieces", [[90], [1] * 20 + [70], [17, 5, 30, 1, 1, 36], [40, 50]])
def test_incremental_equals_full_forward_float64(ref64, config, pieces):
    seq = ids(sum(pieces))
    assert len(seq) > 3 * config.sliding_window
    full = ref64(seq)
    cache, outs, start = ref64.new_cache(), [], 0
    for n in pieces:
        outs.append(ref64.step(seq[start : start + n], cache))
        start += n
    torch.testing.assert_close(torch.cat(outs), full, rtol=0, atol=1e-6)


def test_sliding_cache_keeps_only_the_window(ref64, config):
    cache = ref64.new_cache()
    ref64.step(ids(60), cache)
    for spec in config.layer_layout:
        if spec.kind is LayerKind.SLIDING_ATTENTION:
            assert cache.kv[spec.index][0].shape[0] == config.sliding_window
        elif spec.kind is LayerKind.FULL_ATTENTION:
            assert cache.kv[spec.index][0].shape[0] == 60


def _attention_pair(config, state):
    """The first sliding layer and the global layer, with their weights."""
    mods = {}
    for spec in config.layer_layout:
        if spec.kind in (LayerKind.SLIDING_ATTENTION, LayerKind.FULL_ATTENTION) and spec.kind not in mods:
            mod = DiffAttention(config, spec).double()
            p = f"model.layers.{spec.index}.attn."
            with torch.no_grad():
                mod.Wqkv.weight.copy_(state[p + "Wqkv.weight"])
                mod.Wqkv.bias.copy_(state[p + "Wqkv.bias"])
                mod.out_proj.weight.copy_(state[p + "out_proj.weight"])
                mod.out_proj.bias.copy_(state[p + "out_proj.bias"])
                for name in ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"):
                    getattr(mod, name).copy_(state[p + "inner_cross_attn." + name])
                mod.subln_weight.copy_(state[p + "inner_cross_attn.subln.weight"])
            mods[spec.kind] = mod
    return mods[LayerKind.SLIDING_ATTENTION], mods[LayerKind.FULL_ATTENTION]


def _run(mod, h):
    q, k, v = mod.project(h)
    pos = torch.arange(h.shape[0])
    return mod.attend(q, k, v, pos, pos)


def test_window_hides_old_tokens_only_on_sliding_layers(config, state):
    sliding, full = _attention_pair(config, state)
    g = torch.Generator().manual_seed(3)
    h = torch.randn(3 * config.sliding_window, config.hidden_size, generator=g, dtype=torch.float64)
    h2 = h.clone()
    h2[0] += 1.0  # far outside the window of the last token
    torch.testing.assert_close(_run(sliding, h)[-1], _run(sliding, h2)[-1], rtol=0, atol=1e-12)
    assert not torch.allclose(_run(full, h)[-1], _run(full, h2)[-1])
    h3 = h.clone()
    h3[-config.sliding_window] += 1.0  # the oldest token inside the window
    assert not torch.allclose(_run(sliding, h)[-1], _run(sliding, h3)[-1])


def naive_diff_attention(mod, h):
    """Explicit loops over heads: even/odd split first, then GQA inside each half."""
    q, k, v = mod.project(h)
    t, d = h.shape[0], mod.d
    half_q, half_kv = mod.heads // 2, mod.kv_heads // 2
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    lam = (torch.exp((mod.lambda_q1 * mod.lambda_k1).sum()) - torch.exp((mod.lambda_q2 * mod.lambda_k2).sum())
           + mod.lambda_init)
    heads = []
    for j in range(half_q):
        g = j // (half_q // half_kv)
        outs = []
        for part in (0, 1):
            qh, kh = q[:, 2 * j + part], k[:, 2 * g + part]
            p = (qh @ kh.t() * d**-0.5).masked_fill(~causal, float("-inf")).softmax(-1)
            outs.append(torch.cat([p @ v[:, 2 * g], p @ v[:, 2 * g + 1]], dim=-1))
        diff = outs[0] - lam * outs[1]
        heads.append(diff / diff.pow(2).mean(-1, keepdim=True).add(1e-5).sqrt() * mod.subln_weight
                     * (1 - mod.lambda_init))
    return mod.out_proj(torch.stack(heads, dim=1).reshape(t, -1))


def test_head_grouping_matches_explicit_loops(config, state):
    _, full = _attention_pair(config, state)
    h = torch.randn(11, config.hidden_size, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    torch.testing.assert_close(_run(full, h), naive_diff_attention(full, h))


def test_head_grouping_is_not_the_usual_gqa(state):
    """With 8 q heads over 4 kv heads, SambaY pairs q head 2 with kv head 0 (even half, group 0);
    the usual h // 2 grouping would pair it with kv head 1. The two must differ."""
    cfg = tiny_config(512, num_attention_heads=8, num_key_value_heads=4, hidden_size=256)
    sd = random_state_dict(cfg, seed=5)
    _, full = _attention_pair(cfg, sd)
    h = torch.randn(9, cfg.hidden_size, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    expected = naive_diff_attention(full, h)
    torch.testing.assert_close(_run(full, h), expected)
    q, k, v = full.project(h)
    swapped = k.clone()
    swapped[:, [0, 2]] = k[:, [2, 0]]  # what a wrong q->kv mapping amounts to
    pos = torch.arange(9)
    assert not torch.allclose(full.attend(q, swapped, v, pos, pos), expected)


def test_memory_is_the_ungated_scan_output(ref64, config):
    block = ref64.layers[config.memory_layer]
    mamba = block.attn
    h = torch.randn(7, config.hidden_size, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    out, y = mamba(h)
    x, z = mamba.in_proj(h).chunk(2, dim=-1)
    xc = F.silu(mamba.conv1d(F.pad(x.t(), (mamba.d_conv - 1, 0)).unsqueeze(0)).squeeze(0).t())
    torch.testing.assert_close(out, mamba.out_proj(y * F.silu(z)))
    # the D*x skip is part of the memory: removing it changes y by exactly D*xc
    no_skip = y - mamba.D * xc
    assert not torch.allclose(no_skip, y)
    # and the GMU output depends on the memory
    gmu = ref64.layers[config.memory_layer + 2].attn
    assert not torch.allclose(gmu(h, y), gmu(h, no_skip))


def test_mamba_recurrent_step_matches_the_scan(ref64, config):
    mamba = ref64.layers[0].attn
    h = torch.randn(12, config.hidden_size, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    out, y = mamba(h)
    cache = mamba.new_cache()
    out2, y2 = mamba.step(h, cache)
    torch.testing.assert_close(out2, out)
    torch.testing.assert_close(y2, y)


def test_lm_head_absent_or_present_and_strict_keys(config, state):
    a = SambaYReference(config, state, torch.float64)
    b = SambaYReference(config, {**state, "lm_head.weight": state["model.embed_tokens.weight"]}, torch.float64)
    seq = ids(20)
    torch.testing.assert_close(a(seq), b(seq))
    broken = dict(state)
    del broken["model.layers.0.attn.A_log"]
    with pytest.raises(KeyError, match="A_log"):
        SambaYReference(config, broken)
    with pytest.raises(KeyError, match="bogus"):
        SambaYReference(config, {**state, "model.bogus.weight": torch.zeros(1)})


def test_float32_close_to_float64(config, state, ref64):
    ref32 = SambaYReference(config, state, torch.float32)
    seq = ids(50)
    torch.testing.assert_close(ref32(seq).double(), ref64(seq), rtol=0, atol=1e-4)


def test_outputs_are_not_degenerate(ref64):
    logits = ref64(ids(30))
    assert logits.std(-1).mean() > 2.0
    a, _ = ref64.greedy_generate(ids(12, seed=1).tolist(), 8)
    b, _ = ref64.greedy_generate(ids(12, seed=2).tolist(), 8)
    assert a != b
    assert len(set(a)) > 2


def test_from_pretrained_round_trip(tmp_path, config, state, ref64):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    d = config.to_dict()
    d.pop("layer_types")
    (tmp_path / "config.json").write_text(json.dumps(d))
    loaded = SambaYReference.from_pretrained(tmp_path, dtype=torch.float64)
    seq = ids(25)
    torch.testing.assert_close(loaded(seq), ref64(seq))
