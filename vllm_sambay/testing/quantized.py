"""The reference model for a quantized checkpoint: the same dequantized weights, the same activation rounding.

vLLM's quantized SambaY is checked against :class:`~vllm_sambay.testing.reference.SambaYReference`
run with the checkpoint's weights dequantized to float (:func:`dequantized_state_dict`). For W8A8
the reference also rounds each quantized layer's input to int8 per token, as vLLM's dynamic
activation quantization does (:func:`emulate_int8_activations`), so what remains between the two
is float arithmetic, not quantization error, and a tight bound can catch a wrong scale or a
mis-laid pack.

The two compressed-tensors formats are dequantized here, not with compressed-tensors' own
decompressors: vLLM reads the checkpoint through that library, and the oracle must not share code
with what it checks. Both are a few lines (symmetric, no zero point, as
:mod:`vllm_sambay.quantize` writes them):

- ``int-quantized``: ``weight`` int8 [out, in], ``weight_scale`` [out, 1]; w = q * scale.
- ``pack-quantized``: ``weight_packed`` int32 [out, in / 8], eight 4-bit values per word, value i
  in bits 4i .. 4i+3, stored as q + 8; ``weight_scale`` [out, in / group]; ``weight_shape`` [2];
  w = q * scale of its group along the input.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from ..config import Phi4FlashConfig
from .reference import SambaYReference


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for f in sorted(path.glob("*.safetensors")):
        state.update(load_file(str(f)))
    return state


def unpack_int4(packed: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """int32 [out, in / 8] -> int8 [out, in] in -8 .. 7."""
    shifts = torch.arange(8, dtype=torch.int32) * 4
    nibbles = (packed.unsqueeze(-1) >> shifts) & 0xF  # [out, in/8, 8]
    values = nibbles.reshape(packed.shape[0], -1)[:, : shape[1]]
    return (values - 8).to(torch.int8)


def dequantize_module(tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """One layer's stored tensors (``weight`` / ``weight_packed``, ``weight_scale``, ...) -> float weight."""
    scale = tensors["weight_scale"].double()
    if "weight_packed" in tensors:
        out_f, in_f = (int(v) for v in tensors["weight_shape"])
        q = unpack_int4(tensors["weight_packed"], (out_f, in_f)).double()
        group = in_f // scale.shape[1]
        return q * scale.repeat_interleave(group, dim=1)
    q = tensors["weight"]
    if q.dtype != torch.int8:
        raise ValueError(f"expected int8 weights next to weight_scale, got {q.dtype}")
    return q.double() * scale


def dequantized_state_dict(path: str | Path) -> tuple[Phi4FlashConfig, dict[str, torch.Tensor], set[str]]:
    """(config, float64 state dict under the checkpoint's names, names of the quantized modules)."""
    path = Path(path)
    config = Phi4FlashConfig.from_pretrained(str(path))
    stored = _load_tensors(path)
    quantized = {name.rsplit(".", 1)[0] for name in stored if name.endswith(".weight_scale")}
    state = {}
    for name, tensor in stored.items():
        module, _, param = name.rpartition(".")
        if module in quantized and param in ("weight", "weight_packed"):
            parts = {k.rsplit(".", 1)[1]: v for k, v in stored.items() if k.rsplit(".", 1)[0] == module}
            state[f"{module}.weight"] = dequantize_module(parts)
        elif module not in quantized or not param.startswith(("weight_", "input_")):  # e.g. a bias
            state[name] = tensor.double()
    return config, state, quantized


def quantization_scheme(path: str | Path) -> dict:
    """The checkpoint's single compressed-tensors config group (weights / input_activations)."""
    qc = json.loads((Path(path) / "config.json").read_text())["quantization_config"]
    (group,) = qc["config_groups"].values()
    return group


def dynamic_int8_per_token(x: torch.Tensor) -> torch.Tensor:
    """x rounded as vLLM's dynamic symmetric int8 per-token activation quantization rounds it."""
    scale = x.abs().amax(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny) / 127.0
    return torch.clamp(torch.round(x / scale), -128, 127) * scale


@contextlib.contextmanager
def emulate_int8_activations(reference: SambaYReference, modules: set[str]) -> Iterator[None]:
    """While active, the inputs of the named linear layers (checkpoint names) are rounded to int8
    per token before the matrix product, as in vLLM's W8A8 kernels."""
    handles = []
    for name in modules:
        module = reference.get_submodule(name)
        if not isinstance(module, nn.Linear):
            raise TypeError(f"{name}: expected a Linear layer in the reference, got {type(module).__name__}")
        handles.append(module.register_forward_pre_hook(lambda _m, args: (dynamic_int8_per_token(args[0]),)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def reference_for(path: str | Path, dtype: torch.dtype = torch.float64) -> tuple[SambaYReference, set[str]]:
    """The reference with the checkpoint's dequantized weights, and the quantized module names."""
    config, state, quantized = dequantized_state_dict(path)
    return SambaYReference(config, state, dtype), quantized


def judge(
    reference: SambaYReference, prompt: list[int], generated: list[int], logprobs: list[float], tol: float
) -> dict:
    """vLLM's greedy continuation judged by the reference in vLLM's context (teacher forcing).

    ``max_logprob_error``: max |vLLM logprob - reference logprob| of vLLM's tokens.
    ``wrong_tokens``: positions where vLLM's token is not the reference's argmax although the
    reference's top-2 gap there is at least ``tol``: a near-tie within the stated rounding may go
    either way, a decided position may not."""
    ids = torch.tensor(prompt + generated, dtype=torch.long)
    with torch.no_grad():
        logp = torch.log_softmax(reference.forward(ids).double(), dim=-1)[len(prompt) - 1 : len(ids) - 1]
    top = logp.topk(2, dim=-1)
    chosen = torch.tensor(generated, dtype=torch.long)
    ref_lp = logp.gather(1, chosen[:, None]).squeeze(1)
    errors = (torch.tensor(logprobs, dtype=torch.float64) - ref_lp).abs()
    margin = top.values[:, 0] - top.values[:, 1]
    wrong = ((top.indices[:, 0] != chosen) & (margin >= tol)).nonzero().flatten().tolist()
    return {
        "prompt_len": len(prompt),
        "max_logprob_error": errors.max().item(),
        "wrong_tokens": wrong,
        "near_ties": int((margin < tol).sum()),
    }
