"""The tiny checkpoint factory writes what the published repo looks like."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

from vllm_sambay.config import LayerKind, Phi4FlashConfig
from vllm_sambay.tiny import CHAT_TEMPLATE, train_tokenizer, write_tiny_checkpoint


@pytest.fixture(scope="module")
def ckpt_bf16(tmp_path_factory):
    out = tmp_path_factory.mktemp("t") / "bf16"
    subprocess.run(
        [sys.executable, "-m", "vllm_sambay.tiny", str(out), "--dtype", "bfloat16", "--seed", "3"],
        check=True, capture_output=True,
    )
    return out


def expected_keys(cfg: Phi4FlashConfig) -> dict[str, tuple[int, ...]]:
    """Published key names (architecture.md section 3) with the tiny shapes."""
    h, di, n, r, d = cfg.hidden_size, cfg.mamba_d_inner, cfg.mamba_d_state, cfg.mamba_dt_rank, cfg.head_dim
    kv = cfg.num_key_value_heads * d
    keys = {"model.embed_tokens.weight": (cfg.vocab_size, h), "model.final_layernorm.weight": (h,),
            "model.final_layernorm.bias": (h,)}
    for s in cfg.layer_layout:
        p = f"model.layers.{s.index}."
        for norm in ("input_layernorm", "post_attention_layernorm"):
            keys[p + norm + ".weight"] = keys[p + norm + ".bias"] = (h,)
        keys[p + "mlp.fc1.weight"] = (2 * cfg.intermediate_size, h)
        keys[p + "mlp.fc2.weight"] = (h, cfg.intermediate_size)
        a = p + "attn."
        if s.is_mamba:
            keys |= {a + "in_proj.weight": (2 * di, h), a + "conv1d.weight": (di, 1, cfg.mamba_d_conv),
                     a + "conv1d.bias": (di,), a + "x_proj.weight": (r + 2 * n, di), a + "dt_proj.weight": (di, r),
                     a + "dt_proj.bias": (di,), a + "A_log": (di, n), a + "D": (di,), a + "out_proj.weight": (h, di)}
        elif s.kind is LayerKind.GMU:
            keys |= {a + "in_proj.weight": (di, h), a + "out_proj.weight": (h, di)}
        else:
            out = h if s.kind is LayerKind.CROSS_ATTENTION else h + 2 * kv
            keys |= {a + "Wqkv.weight": (out, h), a + "Wqkv.bias": (out,), a + "out_proj.weight": (h, h),
                     a + "out_proj.bias": (h,), a + "inner_cross_attn.subln.weight": (2 * d,)}
            for lam in ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"):
                keys[a + "inner_cross_attn." + lam] = (d,)
    return keys


def test_cli_writes_a_published_style_checkpoint(ckpt_bf16):
    import transformers

    import vllm_sambay  # noqa: F401

    raw = json.loads((ckpt_bf16 / "config.json").read_text())
    assert raw["model_type"] == "phi4flash" and raw["architectures"] == ["Phi4FlashForCausalLM"]
    assert isinstance(raw["sliding_window"], int)
    assert "layer_types" not in raw and "layers_block_type" not in raw and "head_dim" not in raw
    cfg = transformers.AutoConfig.from_pretrained(ckpt_bf16)
    assert isinstance(cfg, Phi4FlashConfig)
    with safe_open(str(ckpt_bf16 / "model.safetensors"), "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        dtypes = {k: f.get_tensor(k).dtype for k in ("model.layers.0.attn.A_log", "model.layers.0.attn.D",
                                                     "model.layers.1.attn.inner_cross_attn.lambda_q1",
                                                     "model.layers.0.mlp.fc1.weight")}
    assert shapes == expected_keys(cfg)
    assert dtypes["model.layers.0.attn.A_log"] == torch.float32
    assert dtypes["model.layers.0.attn.D"] == torch.float32
    assert dtypes["model.layers.1.attn.inner_cross_attn.lambda_q1"] == torch.float32
    assert dtypes["model.layers.0.mlp.fc1.weight"] == torch.bfloat16
    gen = json.loads((ckpt_bf16 / "generation_config.json").read_text())
    tok = transformers.AutoTokenizer.from_pretrained(ckpt_bf16)
    assert gen["eos_token_id"] == [tok.convert_tokens_to_ids("<|end|>"), tok.convert_tokens_to_ids("<|endoftext|>")]


def test_tokenizer_special_tokens_and_chat_template(ckpt_bf16):
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(ckpt_bf16)
    for special in ("<|endoftext|>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>", "<think>", "</think>"):
        assert len(tok.encode(special, add_special_tokens=False)) == 1, special
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|user|>hi<|end|><|assistant|>"
    ids = tok.encode("<think>2+2 is 4</think>Four.<|end|>", add_special_tokens=False)
    decoded = tok.decode(ids, skip_special_tokens=True)
    assert decoded == "<think>2+2 is 4</think>Four."  # think tags survive, <|end|> does not
    assert tok.decode(tok.encode("naïve café ünïcode ✓", add_special_tokens=False)) == "naïve café ünïcode ✓"
    assert CHAT_TEMPLATE in (ckpt_bf16 / "tokenizer_config.json").read_text()


def test_deterministic_and_idempotent(tmp_path):
    a = write_tiny_checkpoint(tmp_path / "a", seed=1)
    b = write_tiny_checkpoint(tmp_path / "b", seed=1)
    c = write_tiny_checkpoint(tmp_path / "c", seed=2)
    bytes_a = (a / "model.safetensors").read_bytes()
    assert bytes_a == (b / "model.safetensors").read_bytes()
    assert bytes_a != (c / "model.safetensors").read_bytes()
    assert (a / "tokenizer.json").read_text() == (c / "tokenizer.json").read_text()
    mtime = (a / "model.safetensors").stat().st_mtime_ns
    assert write_tiny_checkpoint(tmp_path / "a", seed=1) == a
    assert (a / "model.safetensors").stat().st_mtime_ns == mtime  # reused, not rewritten
    write_tiny_checkpoint(tmp_path / "a", seed=3)
    assert (a / "model.safetensors").read_bytes() != bytes_a  # other parameters: rewritten


def test_tokenizer_training_is_deterministic():
    assert train_tokenizer(512).to_str() == train_tokenizer(512).to_str()
