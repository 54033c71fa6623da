"""Tiny random SambaY checkpoints in the published HF layout, for tests and the CPU demo.

``python -m vllm_sambay.testing.tiny OUT_DIR [--seed S] [--layers N] [--dtype float32|bfloat16|float16]
[--sliding-window W] [--include-lm-head]`` writes (or reuses) a directory that loads like the
published ``microsoft/Phi-4-mini-flash-reasoning`` repo: ``config.json`` (the published vocab size
200064 and token ids; tiny layer sizes), ``model.safetensors``, and the published tokenizer,
``tokenizer_config.json`` (chat template included) and ``generation_config.json``
(:mod:`vllm_sambay.testing.published_tokenizer`). Only the weights are small and random: whatever a
real checkpoint's shape does to the serving stack (plain-text ``<think>`` tags, an eos list, head rows
with no token), this one does too.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import torch
import transformers

from ..config import ARCHITECTURE, LayerKind, Phi4FlashConfig
from . import published_tokenizer

PUBLISHED_CONFIG = published_tokenizer.published_json("config.json")

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
    # The published value: vLLM then derives the default max_model_len from the tokenizer's
    # model_max_length (65536), as it does for the real checkpoint.
    max_position_embeddings=PUBLISHED_CONFIG["max_position_embeddings"],
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
            log_lo, log_hi = math.log(1e-3), math.log(0.1)
            dt = torch.exp(torch.rand(d_inner, generator=g) * (log_hi - log_lo) + log_lo)
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
# Checkpoint directory
# ---------------------------------------------------------------------------------------------
DTYPES = ("float32", "bfloat16", "float16")
# Bump when the directory contents change for the same parameters (old directories get rewritten).
_FORMAT = 3
_FILES = (
    "config.json",
    "model.safetensors",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tiny_params.json",
)


def published_style_config(config: Phi4FlashConfig, dtype: str) -> dict:
    """``config.to_dict()`` minus what the published config.json does not carry: the derived
    ``layer_types`` / ``head_dim`` (the real file has neither, nor ``layers_block_type``), generic
    PreTrainedConfig bookkeeping, and every Mamba field that equals the class default (the real
    file lists none; ``mamba_dt_rank`` counts as default when it equals ceil(hidden_size / 16))."""
    cfg = config.to_dict()
    derived = ("layer_types", "layers_block_type", "head_dim", "dtype", "torch_dtype")
    generic = (
        "id2label",
        "label2id",
        "problem_type",
        "output_attentions",
        "output_hidden_states",
        "return_dict",
        "chunk_size_feed_forward",
        "is_encoder_decoder",
        "_name_or_path",
    )
    for key in (*derived, *generic):
        cfg.pop(key, None)
    defaults = {k: v.default for k, v in inspect.signature(Phi4FlashConfig.__init__).parameters.items()}
    defaults["mamba_dt_rank"] = math.ceil(config.hidden_size / 16)
    for key in [k for k in cfg if k.startswith("mamba_") or k == "mb_per_layer"]:
        if cfg[key] == defaults.get(key):
            del cfg[key]
    cfg["torch_dtype"] = dtype  # the published spelling; transformers 5 maps it to ``dtype``
    # Written by save_pretrained into every hub config.json; without it transformers 5 takes a
    # large-vocabulary tokenizer for a Mistral one and warns about its regex.
    cfg["transformers_version"] = transformers.__version__
    return cfg


def _published_digest() -> str:
    """Changes when the shipped published files (hence the tokenizer) change."""
    h = hashlib.sha256()
    for path in sorted(published_tokenizer.PUBLISHED_DIR.iterdir()):
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


def _matches(out: Path, params: dict) -> bool:
    try:
        return json.loads((out / "tiny_params.json").read_text()) == params and all(
            (out / name).is_file() for name in _FILES
        )
    except (OSError, ValueError):
        return False


def write_tiny_checkpoint(
    out_dir: str | Path,
    *,
    seed: int = 0,
    layers: int = 8,
    dtype: str = "float32",
    include_lm_head: bool = False,
    **config_overrides,
) -> Path:
    """Write a tiny random checkpoint directory laid out like the published HF repo and return
    its path. Files: config.json (int ``sliding_window``, no ``layer_types``), model.safetensors
    (published key names; A_log, D and lambda_* stay float32; no ``lm_head.weight`` unless
    ``include_lm_head``), the published generation_config.json and tokenizer_config.json (chat
    template inside, as published), the rebuilt published tokenizer.json, and tiny_params.json (the
    parameters).

    Idempotent: a directory already written with the same parameters (and the same published files) is
    returned untouched. Otherwise the files go to a temporary sibling directory that is renamed
    into place, so readers never see a half-written checkpoint.
    ``config_overrides`` are Phi4FlashConfig fields (e.g. ``sliding_window=32``).
    """
    from safetensors.torch import save_file

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    out = Path(out_dir)
    overrides = {k: v for k, v in sorted(config_overrides.items()) if TINY_DEFAULTS.get(k, object()) != v}
    params = dict(
        format=_FORMAT,
        seed=seed,
        layers=layers,
        dtype=dtype,
        include_lm_head=include_lm_head,
        overrides=overrides,
        published_sha256=_published_digest(),
    )
    params = json.loads(json.dumps(params))  # the form it takes after a round trip through the file
    if _matches(out, params):
        return out

    # The published ids: bos = eos = pad = <|endoftext|> in config.json (generation_config.json
    # adds <|end|>, the turn end the model actually stops on), and the published head size.
    eot = PUBLISHED_CONFIG["eos_token_id"]
    config = tiny_config(
        PUBLISHED_CONFIG["vocab_size"],
        num_hidden_layers=layers,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        **overrides,
    )
    torch_dtype = getattr(torch, dtype)
    state = {}
    for key, tensor in random_state_dict(config, seed).items():
        keep_fp32 = key.endswith((".A_log", ".D")) or ".lambda_" in key  # as in the real checkpoint
        state[key] = tensor.contiguous() if keep_fp32 else tensor.to(torch_dtype).contiguous()
    if include_lm_head:
        state["lm_head.weight"] = state["model.embed_tokens.weight"].clone()

    texts = {
        "config.json": json.dumps(published_style_config(config, dtype), indent=2, sort_keys=True) + "\n",
        **published_tokenizer.checkpoint_files(),
        "tiny_params.json": json.dumps(params, indent=2) + "\n",  # last: marks the directory complete
    }

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    old = None
    try:
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        for name, text in texts.items():
            (tmp / name).write_text(text, encoding="utf-8")
        umask = os.umask(0)
        os.umask(umask)
        for path in tmp.iterdir():
            path.chmod(0o666 & ~umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp creates 0700
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            out.rename(old / "ckpt")
        try:
            tmp.rename(out)
        except OSError:
            if not _matches(out, params):  # another process won the race with the same parameters
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m vllm_sambay.testing.tiny",
        description="Write a tiny random SambaY checkpoint in the published HF layout; prints its path.",
    )
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layers", type=int, default=8, help="a multiple of 4 (default 8)")
    ap.add_argument("--dtype", default="float32", choices=DTYPES)
    ap.add_argument("--sliding-window", type=int, default=TINY_DEFAULTS["sliding_window"])
    ap.add_argument("--include-lm-head", action="store_true", help="also store the (tied) lm_head.weight")
    args = ap.parse_args(argv)
    path = write_tiny_checkpoint(
        args.out_dir,
        seed=args.seed,
        layers=args.layers,
        dtype=args.dtype,
        include_lm_head=args.include_lm_head,
        sliding_window=args.sliding_window,
    )
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
