"""The plugin's engine-config hook: it runs where vLLM plans the engine, in the user's process,
so refusals reach the user with their own message before any engine process starts, and a
foreign config object is replaced before vLLM reads its layer types."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.engine

# Multi-process engine, as users run it: a check inside the model (in the engine-core process)
# would surface here only as "Engine core initialization failed".
REFUSE_SCRIPT = """
import json, sys
from vllm import LLM
for flags in json.loads(sys.argv[2]):
    try:
        LLM(model=sys.argv[1], dtype="float32", enforce_eager=True, max_model_len=512, **flags)
    except Exception as exc:
        kind = "ValueError" if isinstance(exc, ValueError) else type(exc).__name__  # pydantic's is one
        print("REFUSED:", kind, str(exc).replace("\\n", " "), flush=True)
    else:
        print("STARTED", flush=True)
"""

CASES = [
    (
        {
            "speculative_config": {
                "method": "ngram",
                "num_speculative_tokens": 2,
                "prompt_lookup_max": 3,
                "prompt_lookup_min": 1,
            }
        },
        "does not support speculative decoding; start without --speculative-config",
    ),
    ({"tensor_parallel_size": 3}, "tensor_parallel_size=3 does not split SambaY's differential heads"),
]


def _env(**extra):
    import os

    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", **extra}
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
    return env


def test_refusals_reach_llm_users_before_any_engine_process(tiny_checkpoint):
    # In a subprocess: the n-gram proposer imports numba/llvmlite, after which vLLM 0.32's CPU
    # kernel-override scan of sys.modules fails for every later in-process engine.
    out = subprocess.run(
        [sys.executable, "-c", REFUSE_SCRIPT, str(tiny_checkpoint), json.dumps([f for f, _ in CASES])],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
    )
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith(("REFUSED:", "STARTED"))]
    assert len(lines) == len(CASES), out.stdout[-3000:] + out.stderr[-3000:]
    for line, (_, message) in zip(lines, CASES, strict=True):
        assert line.startswith("REFUSED: ValueError"), line
        assert "Phi4FlashForCausalLM (vllm-sambay)" in line and message in line, line
    log = out.stdout + out.stderr
    assert "Engine core initialization failed" not in log
    assert "EngineCore" not in log, "an engine-core process was started before the refusal"


@pytest.mark.parametrize("entry", ["vllm.entrypoints.openai.api_server", "sambay_server.cli"])
def test_refusal_ends_a_server_start_with_the_message(tiny_checkpoint, entry):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            entry,
            "--model",
            str(tiny_checkpoint),
            "--tensor-parallel-size",
            "3",
            "--max-model-len",
            "512",
            "--port",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
    )
    log = out.stdout + out.stderr
    assert out.returncode != 0, log[-3000:]
    assert "tensor_parallel_size=3 does not split SambaY's differential heads" in log, log[-3000:]
    assert "EngineCore" not in log


def _foreign(config):
    """A ``hf_overrides`` function that hands vLLM a config object of another class, as the
    hub's remote-code config is: a per-layer window list and no ``layer_types``."""
    from transformers import PretrainedConfig

    if not hasattr(config, "num_hidden_layers"):  # vLLM's probe with an empty config
        return config
    values = {k: v for k, v in config.to_dict().items() if k not in ("layer_types", "model_type")}
    n = values["num_hidden_layers"] = config.num_hidden_layers
    values["sliding_window"] = [16 if i % 2 and i < n // 2 else None for i in range(n)]
    foreign = PretrainedConfig(**values)
    assert not hasattr(foreign, "layer_types")
    return foreign


def test_foreign_config_is_replaced_before_vllm_reads_layer_types(tiny_checkpoint):
    from vllm.engine.arg_utils import EngineArgs

    from vllm_sambay.config import Phi4FlashConfig

    args = EngineArgs(
        model=str(tiny_checkpoint), hf_overrides=_foreign, dtype="float32", max_model_len=512, enforce_eager=True
    )
    vllm_config = args.create_engine_config()
    hf_config = vllm_config.model_config.hf_config
    assert type(hf_config) is Phi4FlashConfig
    assert vllm_config.model_config.hf_text_config is hf_config
    assert hf_config.sliding_window == 16 and hf_config.num_hidden_layers == 8
    # Without the swap vLLM reads no layer_types and puts the window on every attention layer.
    assert vllm_config.cache_config.sliding_window is None


@pytest.mark.parametrize("asked,expected", [(None, 65536), (131072, 131072), (2048, 2048)])
def test_context_defaults_to_the_trained_64k(tiny_checkpoint, asked, expected):
    """The published config.json allows 262144 positions (vLLM's default without --max-model-len);
    the model card and Microsoft's serve script use 64K. An explicit value is honoured."""
    from vllm.engine.arg_utils import EngineArgs

    assert json.loads((tiny_checkpoint / "config.json").read_text())["max_position_embeddings"] == 262144
    model_config = EngineArgs(model=str(tiny_checkpoint), max_model_len=asked).create_model_config()
    assert model_config.max_model_len == expected
