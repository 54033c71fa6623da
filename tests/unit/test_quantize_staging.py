"""The converter's staging of a tied checkpoint (vllm_sambay/quantize.py): the published checkpoint
is sharded with an index and stores no lm_head; the stage adds one, equal to the embedding, names it
in the index and unties the config, without touching the source. (The conversion itself needs
llm-compressor: tests/engine/test_quantized.py.)"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from vllm_sambay.quantize import HEAD, INDEX, stage_untied_head


def _sharded(tmp_path, tiny_checkpoint):
    src = tmp_path / "sharded"
    src.mkdir()
    state = load_file(str(tiny_checkpoint / "model.safetensors"))
    names = sorted(state)
    halves = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    weight_map = {}
    for shard, keys in halves.items():
        save_file({k: state[k] for k in keys}, str(src / shard))
        weight_map |= dict.fromkeys(keys, shard)
    (src / INDEX).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (src / "config.json").write_text((tiny_checkpoint / "config.json").read_text())
    return src, state


def test_a_sharded_tied_checkpoint_is_staged_with_its_own_head(tmp_path, tiny_checkpoint):
    src, state = _sharded(tmp_path, tiny_checkpoint)
    before = {p.name: p.stat().st_mtime_ns for p in src.iterdir()}
    stage = tmp_path / "stage"
    stage.mkdir()
    stage_untied_head(src, stage)
    weight_map = json.loads((stage / INDEX).read_text())["weight_map"]
    assert weight_map[HEAD] == "lm_head.safetensors" and len(weight_map) == len(state) + 1
    assert torch.equal(load_file(str(stage / "lm_head.safetensors"))[HEAD], state["model.embed_tokens.weight"])
    assert json.loads((stage / "config.json").read_text())["tie_word_embeddings"] is False
    assert all((stage / name).resolve() == (src / name).resolve() for name in weight_map.values() if "model-" in name)
    assert {p.name: p.stat().st_mtime_ns for p in src.iterdir()} == before  # the source is untouched


def test_a_checkpoint_with_a_head_is_not_staged_twice(tmp_path, tiny_checkpoint):
    src, state = _sharded(tmp_path, tiny_checkpoint)
    save_file({HEAD: state["model.embed_tokens.weight"]}, str(src / "head.safetensors"))
    index = json.loads((src / INDEX).read_text())
    index["weight_map"][HEAD] = "head.safetensors"
    (src / INDEX).write_text(json.dumps(index))
    with pytest.raises(ValueError, match="already stores lm_head.weight"):
        stage_untied_head(src, tmp_path)
