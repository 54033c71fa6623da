"""The layout vLLM actually builds: windows, KV sharing and state slots per layer."""

from __future__ import annotations

import json

import pytest

from vllm_sambay.config import LayerKind

pytestmark = pytest.mark.engine


def _attention_layers(model):
    return {
        name: (mod.sliding_window, mod.kv_sharing_target_layer_name)
        for name, mod in model.named_modules()
        if type(mod).__name__ == "Attention"
    }


def test_window_only_on_self_decoder_with_int_window_and_no_layer_types(tiny_checkpoint, tiny_config, make_engine):
    raw = json.loads((tiny_checkpoint / "config.json").read_text())
    assert isinstance(raw["sliding_window"], int) and "layer_types" not in raw  # the published form
    with make_engine(tiny_checkpoint) as llm:
        assert llm.llm_engine.vllm_config.cache_config.sliding_window is None
        layers = llm.apply_model(_attention_layers)[0]
    expected = {}
    for spec in tiny_config.layer_layout:
        if spec.is_attention:
            target = f"model.layers.{spec.kv_source}.self_attn.attn" if spec.kv_source is not None else None
            mixer = "cross_attn" if spec.kind is LayerKind.CROSS_ATTENTION else "self_attn"
            expected[f"model.layers.{spec.index}.{mixer}.attn"] = (spec.sliding_window, target)
    assert layers == expected
    kinds = {s.kind for s in tiny_config.layer_layout}
    assert {LayerKind.SLIDING_ATTENTION, LayerKind.FULL_ATTENTION, LayerKind.CROSS_ATTENTION} <= kinds
    windowed = [name for name, (window, _) in layers.items() if window]
    assert windowed and len(windowed) < len(layers)


def test_checkpoint_with_stored_lm_head_and_bf16_weights_loads_the_same(tmp_path, tiny_checkpoint, make_engine):
    from vllm_sambay.testing.parity import run_vllm
    from vllm_sambay.testing.tiny import write_tiny_checkpoint

    with_head = write_tiny_checkpoint(tmp_path / "with-head", seed=0, include_lm_head=True)
    prompts = [[11, 12, 13, 14, 15], list(range(20, 70))]
    with make_engine(tiny_checkpoint) as llm:
        base = run_vllm(llm, prompts, 8)
    with make_engine(with_head) as llm:
        assert run_vllm(llm, prompts, 8) == base
