"""Tiny random SambaY checkpoints in the published HF layout, for tests and the CPU demo.

``python -m vllm_sambay.tiny OUT_DIR [--seed S] [--layers N] [--dtype D]``
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
from pathlib import Path

import torch

from .config import ARCHITECTURE, LayerKind, Phi4FlashConfig

# Small enough for a 2-core CI machine, large enough for vLLM's CPU attention (head_dim >= 32,
# block sizes multiple of 32) and to exercise every mechanism: GQA inside each differential half,
# a window much shorter than the test prompts, and all six layer kinds at 8 layers.
TINY_DEFAULTS = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=8,
    num_attention_heads=4,
    num_key_value_heads=2,
    sliding_window=16,
    max_position_embeddings=4096,
    mamba_d_state=8,
    mamba_d_conv=4,
    mamba_expand=2,
)


def tiny_config(vocab_size: int, **overrides) -> Phi4FlashConfig:
    kwargs = {**TINY_DEFAULTS, **overrides}
    return Phi4FlashConfig(vocab_size=vocab_size, architectures=[ARCHITECTURE], **kwargs)


def random_state_dict(config: Phi4FlashConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random float32 weights under the published key names.

    Scales keep activations O(1) through every block and give the tied head a logit spread of
    several units, so different prompts lead to different greedy continuations.
    """
    g = torch.Generator().manual_seed(seed)

    def normal(*shape: int, std: float) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * std

    def linear(out_f: int, in_f: int) -> torch.Tensor:
        return normal(out_f, in_f, std=in_f**-0.5)

    def norm_pair(prefix: str, n: int) -> dict[str, torch.Tensor]:
        return {f"{prefix}.weight": 1.0 + normal(n, std=0.1), f"{prefix}.bias": normal(n, std=0.05)}

    h = config.hidden_size
    d_inner = config.mamba_d_inner
    d_state = config.mamba_d_state
    dt_rank = config.mamba_dt_rank
    hd = config.head_dim
    kv_dim = config.num_key_value_heads * hd
    sd: dict[str, torch.Tensor] = {
        "model.embed_tokens.weight": normal(config.vocab_size, h, std=0.3),
        **norm_pair("model.final_layernorm", h),
    }
    for spec in config.layer_layout:
        p = f"model.layers.{spec.index}"
        sd |= norm_pair(f"{p}.input_layernorm", h)
        sd |= norm_pair(f"{p}.post_attention_layernorm", h)
        sd[f"{p}.mlp.fc1.weight"] = linear(2 * config.intermediate_size, h)
        sd[f"{p}.mlp.fc2.weight"] = linear(h, config.intermediate_size)
        a = f"{p}.attn"
        if spec.is_mamba:
            # S4D-real init for A; dt between 1e-3 and 1e-1 through the softplus bias.
            dt = torch.exp(torch.rand(d_inner, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
            sd |= {
                f"{a}.in_proj.weight": linear(2 * d_inner, h),
                f"{a}.conv1d.weight": normal(d_inner, 1, config.mamba_d_conv, std=config.mamba_d_conv**-0.5),
                f"{a}.conv1d.bias": normal(d_inner, std=0.1),
                f"{a}.x_proj.weight": linear(dt_rank + 2 * d_state, d_inner),
                f"{a}.dt_proj.weight": normal(d_inner, dt_rank, std=dt_rank**-0.5),
                f"{a}.dt_proj.bias": dt + torch.log(-torch.expm1(-dt)),
                f"{a}.A_log": torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d_inner, 1),
                f"{a}.D": 1.0 + normal(d_inner, std=0.1),
                f"{a}.out_proj.weight": linear(h, d_inner),
            }
        elif spec.kind is LayerKind.GMU:
            sd[f"{a}.in_proj.weight"] = linear(d_inner, h)
            sd[f"{a}.out_proj.weight"] = linear(h, d_inner)
        else:
            qkv_out = h if spec.kind is LayerKind.CROSS_ATTENTION else h + 2 * kv_dim
            sd |= {
                f"{a}.Wqkv.weight": linear(qkv_out, h),
                f"{a}.Wqkv.bias": normal(qkv_out, std=0.02),
                f"{a}.out_proj.weight": linear(h, h),
                f"{a}.out_proj.bias": normal(h, std=0.02),
                f"{a}.inner_cross_attn.subln.weight": 1.0 + normal(2 * hd, std=0.1),
            }
            for name in ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"):
                sd[f"{a}.inner_cross_attn.{name}"] = normal(hd, std=0.1)
    return sd


# ---------------------------------------------------------------------------------------------
# Tokenizer and checkpoint directory
# ---------------------------------------------------------------------------------------------
SPECIAL_TOKENS = ["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|tool|>", "<|endofprompt|>"]
THINK_TOKENS = ["<think>", "</think>"]  # single tokens, but kept by decode(skip_special_tokens=True)
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% else %}{{ eos_token }}{% endif %}"
)
CORPUS = Path(__file__).with_name("data") / "tiny_corpus.txt"


def train_tokenizer(vocab_size: int = 1024):
    """Byte-level BPE (any text round-trips) trained on the shipped corpus; deterministic."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS.read_text().splitlines(), trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    return tok


def _round_up(n: int, multiple: int) -> int:
    return (n + multiple - 1) // multiple * multiple


def write_tiny_checkpoint(
    out_dir: str | Path,
    *,
    seed: int = 0,
    layers: int = 8,
    dtype: str = "float32",
    tokenizer_vocab: int = 1024,
    include_lm_head: bool = False,
    **config_overrides,
) -> Path:
    """Write (or reuse, if written with the same parameters) a tiny checkpoint directory laid
    out like the published HF repo: config.json (int sliding_window, no layer_types),
    model.safetensors under the published names, generation_config.json, tokenizer files."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    params = dict(
        seed=seed, layers=layers, dtype=dtype, tokenizer_vocab=tokenizer_vocab,
        include_lm_head=include_lm_head, overrides=config_overrides, format=1,
    )
    stamp = out / "tiny_params.json"
    if stamp.exists() and json.loads(stamp.read_text()) == params:
        return out

    tok = train_tokenizer(tokenizer_vocab)
    eot, end = tok.token_to_id("<|endoftext|>"), tok.token_to_id("<|end|>")
    config = tiny_config(
        _round_up(tok.get_vocab_size(), 64), num_hidden_layers=layers,
        bos_token_id=eot, eos_token_id=eot, pad_token_id=eot, **config_overrides,
    )
    torch_dtype = getattr(torch, dtype)
    state = {}
    for key, tensor in random_state_dict(config, seed).items():
        keep_fp32 = key.endswith((".A_log", ".D")) or ".lambda_" in key  # as in the real checkpoint
        state[key] = tensor.contiguous() if keep_fp32 else tensor.to(torch_dtype).contiguous()
    if include_lm_head:
        state["lm_head.weight"] = state["model.embed_tokens.weight"].clone()

    # Like the published file: no layer_types / head_dim (derived), Mamba fields only if changed.
    cfg = config.to_dict()
    defaults = Phi4FlashConfig().to_dict()
    generic = ("id2label", "label2id", "problem_type", "output_attentions", "output_hidden_states", "return_dict",
               "chunk_size_feed_forward", "is_encoder_decoder", "transformers_version", "_name_or_path")
    for key in ("layer_types", "head_dim", *generic):
        cfg.pop(key, None)
    for key in [k for k in cfg if k.startswith("mamba_") or k == "mb_per_layer"]:
        if cfg[key] == defaults.get(key):
            del cfg[key]
    cfg["torch_dtype"] = dtype
    cfg.pop("dtype", None)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        (tmp / "generation_config.json").write_text(
            json.dumps({"bos_token_id": eot, "eos_token_id": [end, eot], "pad_token_id": eot}, indent=2) + "\n"
        )
        tok.save(str(tmp / "tokenizer.json"))
        (tmp / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
            "model_max_length": config.max_position_embeddings,
            "add_bos_token": False, "add_eos_token": False,
            "clean_up_tokenization_spaces": False,
            "chat_template": CHAT_TEMPLATE,
        }, indent=2) + "\n")
        (tmp / "special_tokens_map.json").write_text(json.dumps({
            "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
        }, indent=2) + "\n")
        (tmp / "chat_template.jinja").write_text(CHAT_TEMPLATE)
        (tmp / "tiny_params.json").write_text(json.dumps(params, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write a tiny random SambaY checkpoint in the HF layout.")
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layers", type=int, default=8, help="a multiple of 4")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--sliding-window", type=int, default=TINY_DEFAULTS["sliding_window"])
    ap.add_argument("--include-lm-head", action="store_true", help="also store the (tied) lm_head.weight")
    args = ap.parse_args(argv)
    path = write_tiny_checkpoint(
        args.out_dir, seed=args.seed, layers=args.layers, dtype=args.dtype,
        include_lm_head=args.include_lm_head, sliding_window=args.sliding_window,
    )
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
