"""The layer layout and every published revision of config.json."""

from __future__ import annotations

import json
import math

import pytest
import transformers

from vllm_sambay.config import LayerKind, Phi4FlashConfig, compute_layer_layout, lambda_init

# architecture.md section 1, for the published 32-layer model: index -> (kind, window, kv_source)
PUBLISHED = {
    **{i: (LayerKind.MAMBA, None, None) for i in range(0, 16, 2)},
    **{i: (LayerKind.SLIDING_ATTENTION, 512, None) for i in range(1, 16, 2)},
    16: (LayerKind.MAMBA_MEMORY, None, None),
    17: (LayerKind.FULL_ATTENTION, None, None),
    **{i: (LayerKind.GMU, None, None) for i in range(18, 32, 2)},
    **{i: (LayerKind.CROSS_ATTENTION, None, 17) for i in range(19, 32, 2)},
}
# The fields of the published config.json (no mamba_*, no layer_types).
PUBLISHED_JSON = dict(
    model_type="phi4flash",
    architectures=["Phi4FlashForCausalLM"],
    vocab_size=200064,
    hidden_size=2560,
    intermediate_size=10240,
    num_hidden_layers=32,
    num_attention_heads=40,
    num_key_value_heads=20,
    max_position_embeddings=262144,
    sliding_window=512,
    hidden_act="silu",
    layer_norm_eps=1e-5,
    tie_word_embeddings=True,
    torch_dtype="bfloat16",
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)
PER_LAYER_WINDOW = [512 if i < 16 and i % 2 else None for i in range(32)]


def layout_table(config):
    return {s.index: (s.kind, s.sliding_window, s.kv_source) for s in config.layer_layout}


def test_published_config_gives_the_documented_layout():
    cfg = Phi4FlashConfig(**PUBLISHED_JSON)
    assert layout_table(cfg) == PUBLISHED
    assert len(cfg.layer_layout) == 32 and [s.index for s in cfg.layer_layout] == list(range(32))
    assert (cfg.memory_layer, cfg.kv_layer) == (16, 17)
    assert cfg.head_dim == 64 and cfg.mamba_d_inner == 5120
    assert [s.index for s in cfg.layer_layout if s.owns_kv] == [*range(1, 16, 2), 17]
    assert [s.index for s in cfg.layer_layout if s.is_mamba] == list(range(0, 17, 2))


REVISIONS = {
    "int-window-no-layer-types": {},
    "int-window-with-layer-types": {"layer_types": ["full_attention"] * 32},
    "int-window-with-all-sliding-layer-types": {"layer_types": ["sliding_attention"] * 32},
    "int-window-with-odd-layer-types": {"layer_types": ["mamba", "attention"] * 16},
    "per-layer-window-list": {"sliding_window": PER_LAYER_WINDOW},
    "per-layer-window-list-with-layer-types": {
        "sliding_window": PER_LAYER_WINDOW,
        "layer_types": ["sliding_attention" if w else "full_attention" for w in PER_LAYER_WINDOW],
    },
    "old-layers-block-type": {
        "sliding_window": PER_LAYER_WINDOW,
        "layers_block_type": ["mamba" if i % 2 == 0 else "attention" for i in range(32)],
    },
    "int-window-with-layers-block-type": {
        "layers_block_type": ["mamba" if i % 2 == 0 else "attention" for i in range(32)],
    },
    "explicit-mamba-defaults": {
        "mamba_d_state": 16,
        "mamba_d_conv": 4,
        "mamba_expand": 2,
        "mamba_dt_rank": "auto",
    },
}


@pytest.mark.parametrize("revision", REVISIONS, ids=list(REVISIONS))
def test_every_revision_gives_the_same_layout(revision):
    cfg = Phi4FlashConfig(**{**PUBLISHED_JSON, **REVISIONS[revision]})
    assert layout_table(cfg) == PUBLISHED
    assert cfg.sliding_window == 512 and type(cfg.sliding_window) is int
    assert cfg.layer_types == Phi4FlashConfig(**PUBLISHED_JSON).layer_types  # file contents never leak in
    assert not hasattr(cfg, "layers_block_type")


@pytest.mark.parametrize("revision", REVISIONS, ids=list(REVISIONS))
def test_every_revision_loads_from_config_json(revision, tmp_path):
    import vllm_sambay  # noqa: F401  (registers model_type phi4flash with AutoConfig)

    (tmp_path / "config.json").write_text(json.dumps({**PUBLISHED_JSON, **REVISIONS[revision]}))
    cfg = transformers.AutoConfig.from_pretrained(tmp_path, trust_remote_code=False)
    assert isinstance(cfg, Phi4FlashConfig)
    assert layout_table(cfg) == PUBLISHED and cfg.sliding_window == 512


def test_missing_mamba_fields_take_published_defaults():
    cfg = Phi4FlashConfig(**PUBLISHED_JSON)
    assert (cfg.mamba_d_state, cfg.mamba_d_conv, cfg.mamba_expand) == (16, 4, 2)
    assert cfg.mamba_dt_rank == math.ceil(2560 / 16) == 160
    assert cfg.mamba_conv_bias is True and cfg.mamba_proj_bias is False
    assert cfg.mb_per_layer == 2


def test_no_window_spellings():
    for window in (None, 0, [None] * 32, [0] * 32):
        cfg = Phi4FlashConfig(**{**PUBLISHED_JSON, "sliding_window": window})
        assert cfg.sliding_window is None
        assert {s.kind for s in cfg.layer_layout} == set(LayerKind)
        assert all(s.sliding_window is None for s in cfg.layer_layout)


def test_layer_types_keep_vllm_from_windowing_every_layer():
    cfg = Phi4FlashConfig(**PUBLISHED_JSON)
    allowed = transformers.configuration_utils.ALLOWED_LAYER_TYPES
    assert len(cfg.layer_types) == cfg.num_hidden_layers
    assert all(t in allowed for t in cfg.layer_types)
    assert not all(t == "sliding_attention" for t in cfg.layer_types)  # vLLM windows all layers otherwise
    assert [i for i, t in enumerate(cfg.layer_types) if t == "sliding_attention"] == list(range(1, 16, 2))
    assert not all(t in ("attention", "full_attention") for t in cfg.layer_types)  # hybrid for vLLM
    assert all(
        (t == "linear_attention") == s.is_mamba or s.kind is LayerKind.GMU
        for t, s in zip(cfg.layer_types, cfg.layer_layout, strict=True)
    )


@pytest.mark.parametrize(
    "overrides,field",
    [
        ({"num_hidden_layers": 30}, "num_hidden_layers"),
        ({"num_hidden_layers": 6}, "num_hidden_layers"),
        ({"num_hidden_layers": 0}, "num_hidden_layers"),
        # 41 heads divide 2624 (head_dim 64) so only the even-heads check can fire
        ({"num_attention_heads": 41, "hidden_size": 2624}, "num_attention_heads"),
        ({"num_attention_heads": 39, "hidden_size": 2496}, "num_attention_heads"),
        # 5 and 21 kv heads: odd (5 divides 40; 21 does not, the even check comes first)
        ({"num_key_value_heads": 5, "num_attention_heads": 40}, "num_key_value_heads"),
        ({"num_key_value_heads": 21}, "num_key_value_heads"),
        ({"num_key_value_heads": 12}, "num_key_value_heads"),  # even, but does not divide 40
        ({"hidden_size": 2570}, "hidden_size"),
        ({"mb_per_layer": 3}, "mb_per_layer"),
        ({"mamba_d_conv": 1}, "mamba_d_conv"),
        ({"sliding_window": [512, 256] * 16}, "sliding_window"),
        ({"sliding_window": -3}, "sliding_window"),
        ({"sliding_window": 512.0}, "sliding_window"),
        ({"sliding_window": True}, "sliding_window"),
    ],
)
def test_invalid_configs_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=rf"^{field}\b"):
        Phi4FlashConfig(**{**PUBLISHED_JSON, **overrides})


def test_autoconfig_round_trip_without_remote_code(tmp_path):
    import vllm_sambay  # noqa: F401  (registers the config)

    original = Phi4FlashConfig(**{**PUBLISHED_JSON, "sliding_window": PER_LAYER_WINDOW})
    original.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "phi4flash" and saved["sliding_window"] == 512
    assert "layer_layout" not in saved
    for loaded in (
        transformers.AutoConfig.from_pretrained(tmp_path, trust_remote_code=False),
        Phi4FlashConfig.from_pretrained(tmp_path),
    ):
        assert isinstance(loaded, Phi4FlashConfig)
        assert layout_table(loaded) == PUBLISHED
        assert loaded.layer_types == original.layer_types
        ignore = {"_name_or_path"}
        assert {k: v for k, v in loaded.to_dict().items() if k not in ignore} == {
            k: v for k, v in original.to_dict().items() if k not in ignore
        }


def test_small_layouts_keep_the_rule():
    specs = compute_layer_layout(8, 16)
    assert [s.kind for s in specs] == [
        LayerKind.MAMBA,
        LayerKind.SLIDING_ATTENTION,
        LayerKind.MAMBA,
        LayerKind.SLIDING_ATTENTION,
        LayerKind.MAMBA_MEMORY,
        LayerKind.FULL_ATTENTION,
        LayerKind.GMU,
        LayerKind.CROSS_ATTENTION,
    ]
    assert specs[7].kv_source == 5
    assert [s.sliding_window for s in specs] == [None, 16, None, 16, None, None, None, None]


def test_lambda_init_values():
    assert lambda_init(1) == pytest.approx(0.3555, abs=1e-4)
    assert lambda_init(17) == pytest.approx(0.7963, abs=1e-4)
    assert Phi4FlashConfig(**PUBLISHED_JSON).layer_layout[17].lambda_init == lambda_init(17)
