"""The two models the benchmark compares, as local directories vLLM loads with dummy weights.

``sambay`` is Phi-4-mini-flash (``Phi4FlashForCausalLM``, this plugin); ``dense`` is Phi-4-mini
(stock vLLM ``Phi3ForCausalLM``), the paper's baseline. Nobody can download either here, so the
configs are written from the published values (docs/benchmark-method.md, "The dense baseline") and
every directory gets the same *benchmark tokenizer*: one word ``t<id>`` per token id over the whole
vocabulary (``sambay_client.workload.benchmark_token``). A prompt of N such words is exactly N
tokens, any id a dummy-weight model samples detokenizes, and the client needs no tokenizer at all.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sambay_client.workload import benchmark_token
from vllm_sambay.config import ARCHITECTURE, Phi4FlashConfig
from vllm_sambay.testing.tiny import published_style_config, tiny_config

MODELS = ("sambay", "dense")
SIZES = ("full", "tiny")

# Phi-4-mini-instruct's config.json (docs/benchmark-method.md): 32 layers, 24 q / 8 kv heads of 128,
# partial rotary 0.75 with LongRoPE; tied embeddings over a 200064-token vocabulary.
PHI4_MINI_LONG_FACTOR = [
    1,
    1.118320672,
    1.250641126,
    1.398617824,
    1.564103225,
    1.74916897,
    1.956131817,
    2.187582649,
    2.446418898,
    2.735880826,
    3.059592084,
    3.421605075,
    3.826451687,
    4.279200023,
    4.785517845,
    5.351743533,
    5.984965424,
    6.693110555,
    7.485043894,
    8.370679318,
    9.36110372,
    10.4687158,
    11.70738129,
    13.09260651,
    14.64173252,
    16.37415215,
    18.31155283,
    20.47818807,
    22.90118105,
    25.61086418,
    28.64115884,
    32.03,
    32.1,
    32.13,
    32.23,
    32.6,
    32.61,
    32.64,
    32.66,
    32.7,
    32.71,
    32.93,
    32.97,
    33.28,
    33.49,
    33.5,
    44.16,
    47.77,
]
FULL_VOCAB = 200064
TINY_VOCAB = 512
EOS_ID = 200020  # <|end|> in the o200k-based Phi-4 vocabulary; benchmarks run with ignore_eos anyway


def dense_config(size: str) -> dict[str, Any]:
    if size == "full":
        hidden, inter, layers, heads, kv, vocab, long_factor = 3072, 8192, 32, 24, 8, FULL_VOCAB, PHI4_MINI_LONG_FACTOR
        max_pos = 131072
    else:  # same shape of config, sized like the tiny SambaY (head_dim 32 for vLLM's CPU attention)
        hidden, inter, layers, heads, kv, vocab, max_pos = 128, 256, 4, 4, 2, TINY_VOCAB, 131072
        long_factor = [1.0 + i / 4 for i in range(int(hidden // heads * 0.75) // 2)]
    rotary_half = int(hidden // heads * 0.75) // 2
    return {
        "architectures": ["Phi3ForCausalLM"],
        "model_type": "phi3",
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "vocab_size": vocab,
        "tie_word_embeddings": True,
        "max_position_embeddings": max_pos,
        "original_max_position_embeddings": 4096,
        "partial_rotary_factor": 0.75,
        "rope_theta": 10000.0,
        "sliding_window": 262144,
        "attention_bias": False,
        "mlp_bias": False,
        "lm_head_bias": False,
        "rope_scaling": {"type": "longrope", "short_factor": [1.0] * rotary_half, "long_factor": long_factor},
        "full_attn_mod": 1,
        "interpolate_factor": 1,
        "attention_dropout": 0.0,
        "embd_pdrop": 0.0,
        "resid_pdrop": 0.0,
        "initializer_range": 0.02,
        "use_cache": True,
        "bos_token_id": 199999 % vocab,
        "eos_token_id": EOS_ID % vocab,
        "pad_token_id": 199999 % vocab,
        "torch_dtype": "bfloat16",
    }


def sambay_config(size: str) -> Phi4FlashConfig:
    if size == "full":  # the class defaults are the published model's
        return Phi4FlashConfig(
            architectures=[ARCHITECTURE], bos_token_id=199999, eos_token_id=EOS_ID, pad_token_id=199999
        )
    return tiny_config(TINY_VOCAB, bos_token_id=1, eos_token_id=2, pad_token_id=0)


def config_dict(model: str, size: str) -> dict[str, Any]:
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; known: {', '.join(MODELS)}")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; known: {', '.join(SIZES)}")
    if model == "dense":
        return dense_config(size)
    return published_style_config(sambay_config(size), "bfloat16")


def write_tokenizer(out: Path, vocab_size: int) -> None:
    """``t0 .. t<vocab_size-1>``, one token per whitespace-separated word; decoding puts the spaces back."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    unk = benchmark_token(0)
    tok = Tokenizer(models.WordLevel({benchmark_token(i): i for i in range(vocab_size)}, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    tok.save(str(out / "tokenizer.json"))
    eos = benchmark_token(EOS_ID % vocab_size)
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "eos_token": eos,
                "bos_token": eos,
                "pad_token": unk,
                "unk_token": unk,
                "model_max_length": 1 << 20,
                "clean_up_tokenization_spaces": False,
                "add_bos_token": False,
                "add_eos_token": False,
            },
            indent=2,
        )
    )


QUANTIZATIONS = ("W8A8", "W4A16")


def quantization_config(scheme: str) -> dict[str, Any]:
    """The ``quantization_config`` that ``python -m vllm_sambay.quantize --scheme SCHEME`` writes
    (compressed-tensors; tests/engine/test_quantized.py holds the two equal), for dummy-weight runs:
    vLLM then builds and times the quantized layers without a converted checkpoint on disk."""
    from vllm_sambay.quantization import CHECKPOINT_IGNORE

    if scheme not in QUANTIZATIONS:
        raise ValueError(f"unknown quantization {scheme!r}; known: {', '.join(QUANTIZATIONS)}")
    int_args = {"type": "int", "symmetric": True, "dynamic": False, "group_size": None}
    if scheme == "W8A8":
        weights = {**int_args, "num_bits": 8, "strategy": "channel"}
        inputs = {**int_args, "num_bits": 8, "strategy": "token", "dynamic": True}
        fmt = "int-quantized"
    else:
        weights, inputs, fmt = (
            {**int_args, "num_bits": 4, "strategy": "group", "group_size": 128},
            None,
            "pack-quantized",
        )
    group = {"targets": ["Linear", "lm_head"], "weights": weights, "input_activations": inputs, "format": fmt}
    return {
        "quant_method": "compressed-tensors",
        "format": fmt,
        "quantization_status": "compressed",
        "config_groups": {"config_group_0": group},
        "ignore": list(CHECKPOINT_IGNORE),
    }


def write_model(root: str | Path, model: str, size: str, quantization: str | None = None) -> Path:
    """``root/<model>-<size>[-<quantization>]`` with config.json and the benchmark tokenizer (no
    weights: vLLM runs it with ``load_format="dummy"``). Rewritten each time; it takes well under a
    second. A quantized SambaY stores its head untied, as the recipe writes it."""
    cfg = config_dict(model, size)
    if quantization is not None:
        if model != "sambay":
            raise ValueError(f"--quantization applies to sambay only, not {model!r}")
        cfg["quantization_config"] = quantization_config(quantization)
        cfg["tie_word_embeddings"] = False
    out = Path(root) / (f"{model}-{size}" + (f"-{quantization.lower()}" if quantization else ""))
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    write_tokenizer(out, cfg["vocab_size"])
    return out
