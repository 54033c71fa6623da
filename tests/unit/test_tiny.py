"""The tiny checkpoint factory writes what the published repo looks like."""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from vllm_sambay.config import LayerKind, Phi4FlashConfig
from vllm_sambay.testing import published_tokenizer
from vllm_sambay.testing.tiny import write_tiny_checkpoint

PUBLISHED = published_tokenizer.PUBLISHED_DIR

FP32_KEYS = (".A_log", ".D", ".lambda_q1", ".lambda_k1", ".lambda_q2", ".lambda_k2")


@pytest.fixture(scope="module")
def ckpt_bf16(tmp_path_factory):
    out = tmp_path_factory.mktemp("t") / "bf16"
    done = subprocess.run(
        [sys.executable, "-m", "vllm_sambay.testing.tiny", str(out), "--dtype", "bfloat16", "--seed", "3"],
        check=True,
        capture_output=True,
        text=True,
    )
    assert done.stdout.strip() == str(out)
    return out


@pytest.fixture(scope="module")
def hf_tok(ckpt_bf16):
    """The checkpoint's tokenizer.json as written (what vLLM serves with the plugin registered)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(ckpt_bf16)


def expected_keys(cfg: Phi4FlashConfig) -> dict[str, tuple[int, ...]]:
    """Published key names (architecture.md section 3) with the tiny shapes."""
    h, di, n, r, d = cfg.hidden_size, cfg.mamba_d_inner, cfg.mamba_d_state, cfg.mamba_dt_rank, cfg.head_dim
    kv = cfg.num_key_value_heads * d
    keys = {
        "model.embed_tokens.weight": (cfg.vocab_size, h),
        "model.final_layernorm.weight": (h,),
        "model.final_layernorm.bias": (h,),
    }
    for s in cfg.layer_layout:
        p = f"model.layers.{s.index}."
        for norm in ("input_layernorm", "post_attention_layernorm"):
            keys[p + norm + ".weight"] = keys[p + norm + ".bias"] = (h,)
        keys[p + "mlp.fc1.weight"] = (2 * cfg.intermediate_size, h)
        keys[p + "mlp.fc2.weight"] = (h, cfg.intermediate_size)
        a = p + "attn."
        if s.is_mamba:
            keys |= {
                a + "in_proj.weight": (2 * di, h),
                a + "conv1d.weight": (di, 1, cfg.mamba_d_conv),
                a + "conv1d.bias": (di,),
                a + "x_proj.weight": (r + 2 * n, di),
                a + "dt_proj.weight": (di, r),
                a + "dt_proj.bias": (di,),
                a + "A_log": (di, n),
                a + "D": (di,),
                a + "out_proj.weight": (h, di),
            }
        elif s.kind is LayerKind.GMU:
            keys |= {a + "in_proj.weight": (di, h), a + "out_proj.weight": (h, di)}
        else:
            out = h if s.kind is LayerKind.CROSS_ATTENTION else h + 2 * kv
            keys |= {
                a + "Wqkv.weight": (out, h),
                a + "Wqkv.bias": (out,),
                a + "out_proj.weight": (h, h),
                a + "out_proj.bias": (h,),
                a + "inner_cross_attn.subln.weight": (2 * d,),
            }
            for lam in ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"):
                keys[a + "inner_cross_attn." + lam] = (d,)
    return keys


def read_safetensors(path: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, torch.dtype]]:
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        dtypes = {k: f.get_tensor(k).dtype for k in f.keys()}
    return shapes, dtypes


def test_config_json_looks_published_and_autoconfig_loads_it(ckpt_bf16, hf_tok):
    import transformers

    import vllm_sambay  # noqa: F401  (registers model_type phi4flash)

    raw = json.loads((ckpt_bf16 / "config.json").read_text())
    assert raw["model_type"] == "phi4flash" and raw["architectures"] == ["Phi4FlashForCausalLM"]
    assert type(raw["sliding_window"]) is int and raw["sliding_window"] == 16
    for absent in ("layer_types", "layers_block_type", "head_dim", "dtype"):
        assert absent not in raw, absent
    assert {k for k in raw if k.startswith("mamba_")} == {"mamba_d_state"}  # only what differs from defaults
    assert raw["torch_dtype"] == "bfloat16"
    published = json.loads((PUBLISHED / "config.json").read_text())
    for key in ("vocab_size", "bos_token_id", "eos_token_id", "pad_token_id", "max_position_embeddings"):
        assert raw[key] == published[key], key
    assert raw["vocab_size"] == 200064 and hf_tok.convert_tokens_to_ids("<|endoftext|>") == raw["eos_token_id"]

    cfg = transformers.AutoConfig.from_pretrained(ckpt_bf16, trust_remote_code=False)
    assert isinstance(cfg, Phi4FlashConfig)
    assert cfg.dtype == torch.bfloat16 and cfg.sliding_window == 16 and cfg.mamba_d_state == 8
    assert cfg.mamba_dt_rank == 8  # "auto" for hidden_size 128
    assert {s.kind for s in cfg.layer_layout} == set(LayerKind)


def test_autoconfig_works_once_the_package_is_imported(ckpt_bf16):
    code = (
        "import sys, transformers\n"
        "try:\n"
        "    transformers.AutoConfig.from_pretrained(sys.argv[1])\n"
        "except (ValueError, KeyError):\n"
        "    pass\n"
        "else:\n"
        "    raise SystemExit('phi4flash known before importing vllm_sambay')\n"
        "import vllm_sambay\n"
        "cfg = transformers.AutoConfig.from_pretrained(sys.argv[1], trust_remote_code=False)\n"
        "print(type(cfg).__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(ckpt_bf16)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["Phi4FlashConfig"]


def test_safetensors_keys_shapes_and_dtypes(ckpt_bf16):
    import transformers

    import vllm_sambay  # noqa: F401

    cfg = transformers.AutoConfig.from_pretrained(ckpt_bf16)
    shapes, dtypes = read_safetensors(ckpt_bf16)
    assert shapes == expected_keys(cfg)  # exactly the published names; no lm_head.weight (tied)
    fp32 = {k for k in dtypes if k.endswith(FP32_KEYS)}
    assert fp32 and all(dtypes[k] == torch.float32 for k in fp32)
    assert "model.layers.0.attn.A_log" in fp32 and "model.layers.1.attn.inner_cross_attn.lambda_q1" in fp32
    assert all(dtypes[k] == torch.bfloat16 for k in dtypes.keys() - fp32)


def test_tokenizer_and_generation_files_are_the_published_ones(ckpt_bf16):
    for name in ("tokenizer_config.json", "generation_config.json"):
        assert (ckpt_bf16 / name).read_text() == (PUBLISHED / name).read_text(), name
    gen = json.loads((ckpt_bf16 / "generation_config.json").read_text())
    assert gen["eos_token_id"] == [200020, 199999]  # <|end|>, <|endoftext|>


def test_tokenizer_has_the_published_ids(hf_tok):
    added = json.loads((PUBLISHED / "tokenizer_config.json").read_text())["added_tokens_decoder"]
    for i, spec in added.items():
        assert hf_tok.convert_tokens_to_ids(spec["content"]) == int(i), spec["content"]
        assert hf_tok.encode(spec["content"], add_special_tokens=False) == [int(i)]
    assert len(hf_tok) == 200010  # 199998 BPE tokens + 12 added; the head has 200064 rows
    assert hf_tok.encode("hello world", add_special_tokens=False) == [24912, 2375]  # the README's check
    # <think> is plain text: three BPE tokens, the '>' merged with the newline after it
    assert hf_tok.encode("<think>\n", add_special_tokens=False) == [33313, 881, 523]
    assert hf_tok.encode("</think>\n\n", add_special_tokens=False) == [808, 49631, 3037]
    assert hf_tok.convert_ids_to_tokens([199998, 200000, 200029, 200063]) == [None] * 4  # ids without a token
    ids = hf_tok.encode("<|user|>Sum?<|end|><|assistant|><think>2+2 is 4</think>Four.<|end|>", add_special_tokens=False)
    assert hf_tok.decode(ids, skip_special_tokens=True) == "Sum?<think>2+2 is 4</think>Four."


def test_tokenizer_is_o200k_byte_pair_encoding(hf_tok):
    """Rank-based BPE (what the model was trained with) and the rebuilt merges agree, on text that
    exercises the split pattern: contractions in capitals, digit groups, newline runs, punctuation."""
    ranks = published_tokenizer.bpe_ranks()
    pattern = __import__("regex").compile(published_tokenizer.O200K_PATTERN)
    byte_level = {b: c for b, c in zip(range(256), _gpt2_alphabet(), strict=True)}

    def rank_bpe(piece: str) -> list[int]:
        parts = list(piece)
        while len(parts) > 1:
            pairs = [(ranks.get(parts[i] + parts[i + 1], 1 << 30), i) for i in range(len(parts) - 1)]
            r, i = min(pairs)
            if r == 1 << 30:
                break
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        return [ranks[p] for p in parts]

    text = "DON'T panic: 1234567 apples.\n\n\n  def f(x):\n\treturn x</think>\n\nnaïve café 😀 日本語"
    expected = [t for w in pattern.findall(text) for t in rank_bpe("".join(byte_level[b] for b in w.encode()))]
    assert hf_tok.encode(text, add_special_tokens=False) == expected


def _gpt2_alphabet() -> list[str]:
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    out, extra = [], 0
    for b in range(256):
        if b in keep:
            out.append(chr(b))
        else:
            out.append(chr(256 + extra))
            extra += 1
    return out


ODD_TEXTS = [
    "naïve café ünïcode ✓ → 😀",
    "  two  spaces\tand\nlines\r\n",
    "日本語テキスト",
    "x = [i ** 2 for i in range(5)]  # comment",
    "",
]


@pytest.mark.parametrize("text", ODD_TEXTS)
def test_any_text_round_trips(hf_tok, text):
    assert hf_tok.decode(hf_tok.encode(text, add_special_tokens=False)) == text


def test_chat_template_is_the_published_one(ckpt_bf16, hf_tok):
    hi = [{"role": "user", "content": "hi"}]
    text = hf_tok.apply_chat_template(hi, tokenize=False, add_generation_prompt=True)
    assert text == "<|user|>hi<|end|><|assistant|>"  # no system prompt, no <think> inserted
    convo = hi + [{"role": "assistant", "content": "<think>greet</think>Hello."}]
    assert hf_tok.apply_chat_template(convo, tokenize=False) == (
        "<|user|>hi<|end|><|assistant|><think>greet</think>Hello.<|end|><|endoftext|>"
    )
    ids = hf_tok.apply_chat_template(hi, tokenize=True, add_generation_prompt=True)
    ids = ids["input_ids"] if not isinstance(ids, list) else ids
    assert list(ids) == [200021, *hf_tok.encode("hi", add_special_tokens=False), 200020, 200019]


def test_tokenizer_is_the_same_in_every_process(ckpt_bf16):
    assert (ckpt_bf16 / "tokenizer.json").read_text() == published_tokenizer.tokenizer_json()


def test_same_seed_same_bytes_and_idempotent(tmp_path):
    a = write_tiny_checkpoint(tmp_path / "a", seed=1)
    b = write_tiny_checkpoint(tmp_path / "b", seed=1)
    c = write_tiny_checkpoint(tmp_path / "c", seed=2)
    bytes_a = (a / "model.safetensors").read_bytes()
    assert bytes_a == (b / "model.safetensors").read_bytes()
    assert bytes_a != (c / "model.safetensors").read_bytes()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (a / name).read_text() == (c / name).read_text(), name

    mtime = (a / "model.safetensors").stat().st_mtime_ns
    assert write_tiny_checkpoint(tmp_path / "a", seed=1) == a
    assert write_tiny_checkpoint(tmp_path / "a", seed=1, sliding_window=16) == a  # the default, spelled out
    assert (a / "model.safetensors").stat().st_mtime_ns == mtime  # reused, not rewritten

    (a / "tokenizer.json").unlink()  # an incomplete directory is rewritten
    write_tiny_checkpoint(tmp_path / "a", seed=1)
    assert (a / "tokenizer.json").read_text() == published_tokenizer.tokenizer_json()
    assert (a / "model.safetensors").read_bytes() == bytes_a

    write_tiny_checkpoint(tmp_path / "a", seed=3)  # other parameters: rewritten
    assert (a / "model.safetensors").read_bytes() != bytes_a
    assert json.loads((a / "tiny_params.json").read_text())["seed"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]  # no temporary directories left


def test_layers_window_and_lm_head_options(tmp_path):
    import vllm_sambay  # noqa: F401

    out = write_tiny_checkpoint(tmp_path / "x", layers=12, include_lm_head=True, sliding_window=8)
    cfg = Phi4FlashConfig.from_pretrained(out)
    assert cfg.num_hidden_layers == 12 and cfg.sliding_window == 8
    assert (cfg.memory_layer, cfg.kv_layer) == (6, 7)
    shapes, dtypes = read_safetensors(out)
    assert shapes == {**expected_keys(cfg), "lm_head.weight": (cfg.vocab_size, cfg.hidden_size)}
    assert set(dtypes.values()) == {torch.float32}
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert torch.equal(f.get_tensor("lm_head.weight"), f.get_tensor("model.embed_tokens.weight"))


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="dtype"):
        write_tiny_checkpoint(tmp_path / "d", dtype="int8")
    with pytest.raises(ValueError, match="num_hidden_layers"):
        write_tiny_checkpoint(tmp_path / "l", layers=6)
    assert list(tmp_path.iterdir()) == []


def test_published_files_ship_with_the_package():
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    setuptools_cfg = pyproject["tool"]["setuptools"]
    assert "vllm_sambay.testing.data.phi4flash" in setuptools_cfg["packages"]
    patterns = setuptools_cfg["package-data"]["vllm_sambay.testing.data.phi4flash"]
    for path in PUBLISHED.iterdir():
        assert any(fnmatch.fnmatch(path.name, p) for p in patterns), path.name
