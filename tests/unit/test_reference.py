"""The reference model: its parallel and incremental paths agree, and each architectural detail is
pinned against an independent formula written here from the raw checkpoint tensors, with a
negative control showing that the plausible mistake would fail the check."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vllm_sambay.config import LayerKind
from vllm_sambay.testing.reference import CheckpointMismatchError, SambaYReference
from vllm_sambay.testing.tiny import random_state_dict, tiny_config

VOCAB = 512


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: intra-op threads only add synchronisation (badly so on a busy 2-core box)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def config():
    return tiny_config(VOCAB)


@pytest.fixture(scope="module")
def state(config):
    return random_state_dict(config, seed=0)


@pytest.fixture(scope="module")
def ref64(config, state):
    return SambaYReference(config, state, torch.float64)


def ids(n, seed=0):
    return torch.randint(10, VOCAB, (n,), generator=torch.Generator().manual_seed(seed))


def randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def weights(state, layer):
    """The raw float64 tensors of ``model.layers.{layer}.attn``, keyed without that prefix."""
    prefix = f"model.layers.{layer}.attn."
    return {
        k[len(prefix) :].replace("inner_cross_attn.", ""): v.double() for k, v in state.items() if k.startswith(prefix)
    }


def index_of(config, kind, nth=0):
    return [s.index for s in config.layer_layout if s.kind is kind][nth]


# ---------------------------------------------------------------------------------------------
# Independent formulas (from the raw tensors; nothing from vllm_sambay.testing.reference)
# ---------------------------------------------------------------------------------------------
def naive_mamba(w, h, d_conv, dt_rank, d_state):
    """Mamba-1 token by token from the definition -> (out, ungated y, conv output xc)."""
    d_inner = w["D"].shape[0]
    xz = h @ w["in_proj.weight"].t()
    x, z = xz[:, :d_inner], xz[:, d_inner:]
    xc = torch.zeros_like(x)
    for t in range(len(x)):
        for k in range(d_conv):  # tap k reads the input d_conv-1-k steps back
            if t - (d_conv - 1) + k >= 0:
                xc[t] += w["conv1d.weight"][:, 0, k] * x[t - (d_conv - 1) + k]
    xc = F.silu(xc + w["conv1d.bias"])
    dbc = xc @ w["x_proj.weight"].t()
    dt = F.softplus(dbc[:, :dt_rank] @ w["dt_proj.weight"].t() + w["dt_proj.bias"])
    B, C = dbc[:, dt_rank : dt_rank + d_state], dbc[:, dt_rank + d_state :]
    A = -torch.exp(w["A_log"])
    s = torch.zeros(d_inner, d_state, dtype=h.dtype)
    y = torch.zeros_like(x)
    for t in range(len(x)):
        for c in range(d_inner):
            s[c] = torch.exp(dt[t, c] * A[c]) * s[c] + dt[t, c] * B[t] * xc[t, c]
            y[t, c] = torch.dot(s[c], C[t]) + w["D"][c] * xc[t, c]
    return (y * F.silu(z)) @ w["out_proj.weight"].t(), y, xc


def kv_heads_sambay(pair, part, heads, kv_heads):
    """Split even/odd first, GQA inside the half: -> (k head, v1 head, v2 head) on original indices."""
    g = pair // ((heads // 2) // (kv_heads // 2))
    return 2 * g + part, 2 * g, 2 * g + 1


def kv_heads_unsplit(pair, part, heads, kv_heads):
    """The bug: usual GQA (q head h -> kv head h // ratio) on unsplit heads, then the even/odd split."""
    r = heads // kv_heads
    return (2 * pair + part) // r, (2 * pair) // r, (2 * pair + 1) // r


def naive_diff_attention(w, h, heads, kv_heads, layer, window=None, kv=None, grouping=kv_heads_sambay):
    """Differential attention with explicit loops over head pairs and query positions."""
    T, hidden = h.shape
    d = hidden // heads
    qkv = h @ w["Wqkv.weight"].t() + w["Wqkv.bias"]
    q = qkv[:, : heads * d].reshape(T, heads, d)
    if kv is None:
        k = qkv[:, heads * d : (heads + kv_heads) * d].reshape(T, kv_heads, d)
        v = qkv[:, (heads + kv_heads) * d :].reshape(T, kv_heads, d)
    else:
        k, v = kv
    lam_init = 0.8 - 0.6 * math.exp(-0.3 * layer)
    lam = (
        torch.exp(torch.dot(w["lambda_q1"], w["lambda_k1"]))
        - torch.exp(torch.dot(w["lambda_q2"], w["lambda_k2"]))
        + lam_init
    )
    out = torch.zeros(T, heads * d, dtype=h.dtype)
    for t in range(T):
        keys = [s for s in range(T) if s <= t and (window is None or s > t - window)]
        for pair in range(heads // 2):
            halves = []
            for part in (0, 1):  # q head 2*pair reads the first map, 2*pair+1 the second
                kh, v1, v2 = grouping(pair, part, heads, kv_heads)
                scores = torch.stack([torch.dot(q[t, 2 * pair + part], k[s, kh]) for s in keys])
                p = torch.softmax(scores / d**0.5, 0)
                halves.append(torch.cat([p @ v[keys, v1], p @ v[keys, v2]]))
            diff = halves[0] - lam * halves[1]
            o = diff / torch.sqrt(diff.pow(2).mean() + 1e-5) * w["subln.weight"] * (1 - lam_init)
            out[t, 2 * pair * d : (2 * pair + 2) * d] = o  # heads 2*pair, 2*pair+1
    return out @ w["out_proj.weight"].t() + w["out_proj.bias"]


# ---------------------------------------------------------------------------------------------
# Parallel path == incremental path
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def long_seq(config, ref64):
    seq = ids(90)
    assert len(seq) > 5 * config.sliding_window
    return seq, ref64(seq)


@pytest.mark.parametrize(
    "pieces",
    [[90], [1] * 20 + [70], [17, 5, 30, 1, 1, 36], [16, 16, 16, 42], [3, 40] + [1] * 47],
    ids=["one-call", "tokens-then-chunk", "mixed", "window-sized", "chunk-then-decode"],
)
def test_incremental_equals_full_forward_float64(ref64, long_seq, pieces):
    seq, full = long_seq
    cache, outs, start = ref64.new_cache(), [], 0
    for n in pieces:
        outs.append(ref64.step(seq[start : start + n], cache))
        start += n
    assert start == len(seq) and cache.length == len(seq)
    torch.testing.assert_close(torch.cat(outs), full, rtol=0, atol=1e-6)


def test_cache_contents(ref64, config):
    cache = ref64.new_cache()
    ref64.step(ids(60), cache)
    ref64.step(ids(1, seed=9), cache)
    for spec in config.layer_layout:
        if spec.kind is LayerKind.SLIDING_ATTENTION:
            assert cache.kv[spec.index].k.shape[0] == config.sliding_window
            assert cache.kv[spec.index].pos.tolist() == list(range(61 - config.sliding_window, 61))
        elif spec.kind is LayerKind.FULL_ATTENTION:
            assert cache.kv[spec.index].k.shape == (61, config.num_key_value_heads, config.head_dim)
        elif spec.is_mamba:
            assert cache.mamba[spec.index].conv.shape == (config.mamba_d_inner, config.mamba_d_conv - 1)
            assert cache.mamba[spec.index].ssm.shape == (config.mamba_d_inner, config.mamba_d_state)
        else:  # GMU and cross layers keep nothing of their own
            assert spec.index not in cache.kv and spec.index not in cache.mamba


def test_greedy_generate_agrees_with_teacher_forced_parallel_path(ref64):
    prompt = ids(21, seed=3).tolist()
    tokens, logprobs = ref64.greedy_generate(prompt, 12)
    assert len(tokens) == len(logprobs) == 12
    logits = ref64(torch.tensor(prompt + tokens))[len(prompt) - 1 : -1]
    assert logits.argmax(-1).tolist() == tokens
    torch.testing.assert_close(
        torch.tensor(logprobs), torch.tensor(ref64.logprobs_of(prompt, tokens)), rtol=0, atol=1e-9
    )
    assert all(lp <= 0 for lp in logprobs)


# ---------------------------------------------------------------------------------------------
# Sliding window
# ---------------------------------------------------------------------------------------------
def test_window_hides_old_tokens_only_on_sliding_layers(ref64, config):
    layers = ref64.model.layers
    sliding = layers[index_of(config, LayerKind.SLIDING_ATTENTION)].attn
    full = layers[config.kv_layer].attn
    cross = layers[index_of(config, LayerKind.CROSS_ATTENTION)].attn
    W = config.sliding_window
    T = 3 * W
    h = randn(T, config.hidden_size, seed=3)

    def poked(pos):
        h2 = h.clone()
        h2[pos] += 1.0
        return h2

    last = T - 1
    base = sliding(h)[last]
    for outside in (0, last - W):  # last - W is the newest token just outside the window
        torch.testing.assert_close(sliding(poked(outside))[last], base, rtol=0, atol=1e-12)
    assert (sliding(poked(last - W + 1))[last] - base).abs().max() > 1e-4  # oldest token inside

    # The full layer, and the cross layers reading its K/V, see everything.
    assert (full(poked(0))[last] - full(h)[last]).abs().max() > 1e-4
    _, k, v = full.project(h)
    _, k2, v2 = full.project(poked(0))
    assert (cross(h, kv=(k2, v2))[last] - cross(h, kv=(k, v))[last]).abs().max() > 1e-4


# ---------------------------------------------------------------------------------------------
# Differential attention head grouping
# ---------------------------------------------------------------------------------------------
HEAD_CONFIGS = [(4, 2), (8, 4), (8, 2), (4, 4)]


@pytest.fixture(scope="module", params=HEAD_CONFIGS, ids=[f"{h}q{kv}kv" for h, kv in HEAD_CONFIGS])
def heads_model(request):
    heads, kv_heads = request.param
    cfg = tiny_config(64, num_attention_heads=heads, num_key_value_heads=kv_heads)
    sd = random_state_dict(cfg, seed=heads * 10 + kv_heads)
    return cfg, sd, SambaYReference(cfg, sd, torch.float64)


ATTENTION_KINDS = [LayerKind.SLIDING_ATTENTION, LayerKind.FULL_ATTENTION, LayerKind.CROSS_ATTENTION]


@pytest.mark.parametrize("kind", ATTENTION_KINDS, ids=[k.value for k in ATTENTION_KINDS])
def test_differential_attention_matches_naive_per_head_loops(heads_model, kind):
    cfg, sd, ref = heads_model
    H, KV = cfg.num_attention_heads, cfg.num_key_value_heads
    i = index_of(cfg, kind)
    T = cfg.sliding_window + 7  # the window cuts in on the sliding layer
    h = randn(T, cfg.hidden_size, seed=4)
    module = ref.model.layers[i].attn
    if kind is LayerKind.CROSS_ATTENTION:
        _, k, v = ref.model.layers[cfg.kv_layer].attn.project(randn(T, cfg.hidden_size, seed=5))
        got, expected = module(h, kv=(k, v)), naive_diff_attention(weights(sd, i), h, H, KV, i, kv=(k, v))
    else:
        window = cfg.sliding_window if kind is LayerKind.SLIDING_ATTENTION else None
        got, expected = module(h), naive_diff_attention(weights(sd, i), h, H, KV, i, window=window)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)


def test_usual_gqa_grouping_on_unsplit_heads_would_be_caught(heads_model):
    """Negative control for the test above: the h -> h // ratio grouping gives a different result
    whenever there is grouping at all (with H == KV the two coincide)."""
    cfg, sd, ref = heads_model
    H, KV = cfg.num_attention_heads, cfg.num_key_value_heads
    i = cfg.kv_layer
    h = randn(9, cfg.hidden_size, seed=6)
    right = naive_diff_attention(weights(sd, i), h, H, KV, i)
    wrong = naive_diff_attention(weights(sd, i), h, H, KV, i, grouping=kv_heads_unsplit)
    if H == KV:
        torch.testing.assert_close(wrong, right)
    else:
        assert (wrong - right).abs().max() > 1e-2
        assert (ref.model.layers[i].attn(h) - wrong).abs().max() > 1e-2


# ---------------------------------------------------------------------------------------------
# Mamba, memory, GMU, MLP
# ---------------------------------------------------------------------------------------------
def test_mamba_scan_matches_recurrent_loop(ref64, config, state):
    mamba = ref64.model.layers[0].attn
    h = randn(13, config.hidden_size, seed=8)
    out, y = mamba(h)
    n_out, n_y, _ = naive_mamba(weights(state, 0), h, config.mamba_d_conv, config.mamba_dt_rank, config.mamba_d_state)
    torch.testing.assert_close(y, n_y, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out, n_out, rtol=1e-10, atol=1e-10)
    # The module's own recurrent form, fed in pieces, continues across calls.
    st, outs, ys, start = mamba.new_state(), [], [], 0
    for n in (5, 1, 1, 6):
        o, yy = mamba.step(h[start : start + n], st)
        outs.append(o)
        ys.append(yy)
        start += n
    torch.testing.assert_close(torch.cat(ys), y, rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.cat(outs), out, rtol=0, atol=1e-12)


def test_memory_is_the_ungated_scan_output_and_feeds_every_gmu(ref64, config, state):
    record = {}
    ref64(ids(24, seed=7), record=record)
    m_layer = config.memory_layer
    h = record[f"layers.{m_layer}.mixer_in"]
    w = weights(state, m_layer)
    out, y, xc = naive_mamba(w, h, config.mamba_d_conv, config.mamba_dt_rank, config.mamba_d_state)
    torch.testing.assert_close(record["memory"], y, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(record[f"layers.{m_layer}.mixer_out"], out, rtol=1e-10, atol=1e-10)
    # Negative controls: the gated output and the scan output without the D*x skip are different.
    z = (h @ w["in_proj.weight"].t())[:, config.mamba_d_inner :]
    assert (y * F.silu(z) - y).abs().max() > 1e-2
    assert (w["D"] * xc).abs().max() > 1e-2

    gmus = [s.index for s in config.layer_layout if s.kind is LayerKind.GMU]
    assert gmus
    for g in gmus:
        wg, hg = weights(state, g), record[f"layers.{g}.mixer_in"]
        expected = (y * F.silu(hg @ wg["in_proj.weight"].t())) @ wg["out_proj.weight"].t()
        torch.testing.assert_close(record[f"layers.{g}.mixer_out"], expected, rtol=1e-10, atol=1e-10)
        gmu = ref64.model.layers[g].attn
        assert gmu(hg, torch.zeros_like(y)).abs().max() == 0
        assert (gmu(hg, y + 0.1 * randn(*y.shape, seed=g)) - gmu(hg, y)).abs().max() > 1e-3


def test_mlp_gate_is_the_first_half(ref64, config, state):
    x = randn(5, config.hidden_size, seed=11)
    fc1 = state["model.layers.0.mlp.fc1.weight"].double()
    fc2 = state["model.layers.0.mlp.fc2.weight"].double()
    gate, up = x @ fc1[: config.intermediate_size].t(), x @ fc1[config.intermediate_size :].t()
    got = ref64.model.layers[0].mlp(x)
    torch.testing.assert_close(got, (F.silu(gate) * up) @ fc2.t())
    assert (got - (F.silu(up) * gate) @ fc2.t()).abs().max() > 1e-2


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------
def test_lm_head_present_or_absent_gives_the_same_logits(config, state, ref64):
    tied = state["model.embed_tokens.weight"].clone()
    with_head = SambaYReference(config, {**state, "lm_head.weight": tied}, torch.float64)
    seq = ids(20)
    torch.testing.assert_close(with_head(seq), ref64(seq), rtol=0, atol=0)


def test_state_dict_is_checked_strictly(config, state):
    broken = dict(state)
    del broken["model.layers.0.attn.A_log"]
    with pytest.raises(CheckpointMismatchError, match=r"missing keys \['model\.layers\.0\.attn\.A_log'\]"):
        SambaYReference(config, broken)
    with pytest.raises(CheckpointMismatchError, match=r"unexpected keys \['model\.bogus\.weight'\]"):
        SambaYReference(config, {**state, "model.bogus.weight": torch.zeros(1)})
    with pytest.raises(KeyError, match="subln"):  # CheckpointMismatchError is a KeyError
        SambaYReference(config, {k: v for k, v in state.items() if "subln" not in k})
    bad_shape = {**state, "model.layers.1.attn.Wqkv.bias": torch.zeros(3)}
    with pytest.raises(ValueError, match="Wqkv.bias"):
        SambaYReference(config, bad_shape)
    with pytest.raises(ValueError, match="ties"):
        SambaYReference(config, {**state, "lm_head.weight": torch.zeros(VOCAB, config.hidden_size)})


def test_from_pretrained_round_trip(tmp_path, config, state, ref64):
    from safetensors.torch import save_file

    config.save_pretrained(tmp_path)  # config.json
    keys = sorted(state)
    half = len(keys) // 2  # two shards: every *.safetensors file is read
    for n, shard in enumerate((keys[:half], keys[half:]), start=1):
        tensors = {k: state[k].contiguous() for k in shard}
        save_file(tensors, str(tmp_path / f"model-0000{n}-of-00002.safetensors"))
    loaded = SambaYReference.from_pretrained(tmp_path, dtype=torch.float64)
    assert loaded.config.layer_layout == config.layer_layout
    assert loaded.dtype == torch.float64
    seq = ids(25)
    torch.testing.assert_close(loaded(seq), ref64(seq), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# Precision and degeneracy
# ---------------------------------------------------------------------------------------------
def test_float32_close_to_float64(config, state, ref64):
    ref32 = SambaYReference(config, state, torch.float32)
    seq = ids(50)
    out32 = ref32(seq)
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), ref64(seq), rtol=0, atol=1e-4)


def test_outputs_are_not_degenerate(ref64):
    """Random weights must still make the comparisons meaningful: logits spread over several
    units, and the continuation depends on the prompt."""
    logits = ref64(ids(30))
    assert logits.std(-1).min() > 2.0
    a, _ = ref64.greedy_generate(ids(12, seed=1).tolist(), 8)
    b, _ = ref64.greedy_generate(ids(12, seed=2).tolist(), 8)
    assert a != b
    assert len(set(a)) > 2 and len(set(b)) > 2
