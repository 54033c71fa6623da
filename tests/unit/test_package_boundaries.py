"""Arrows point into the plugin, never out of it; client code never loads torch."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "vllm", "vllm_sambay", "safetensors", "tokenizers")
CLIENT_SIDE = (
    "aiohttp",
    "httpx",
    "fastapi",
    "uvicorn",
    "starlette",
    "locust",
    "matplotlib",
    "gevent",
    "geventhttpclient",
    "sambay_client",
    "sambay_bench",
    "sambay_server",
    "sambay_eval",
    "loadtest",
)


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys, json; {statement}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return {name.split(".")[0] for name in json.loads(out.stdout.splitlines()[-1])}


def test_the_locust_file_loads_neither_torch_nor_the_plugin():
    loaded = _loaded_after("import loadtest.locustfile, loadtest.report, loadtest.sweep")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_the_client_package_loads_neither_torch_nor_the_plugin():
    loaded = _loaded_after(
        "import sambay_client.sse, sambay_client.metrics, sambay_client.workload, sambay_client.jsonutil"
    )
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_the_evaluation_runs_without_torch_or_the_plugin():
    """It scores a remote server's answers: a laptop without torch must be able to run it."""
    loaded = _loaded_after(
        "import sambay_eval.answers, sambay_eval.tasks.utils; "
        "sambay_eval.answers.is_equivalent(sambay_eval.answers.final_answer('\\\\boxed{1/2}'), '0.5')"
    )
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_no_plugin_module_imports_client_server_or_bench_code():
    offenders = {
        str(path.relative_to(REPO)): sorted(_imports(path) & set(CLIENT_SIDE))
        for path in (REPO / "vllm_sambay").rglob("*.py")
        if _imports(path) & set(CLIENT_SIDE)
    }
    assert not offenders, offenders


def test_the_boundary_checks_see_imports():
    # The AST walk must see nested and from-imports, or the test above could never fail.
    sample = REPO / "loadtest" / "stream_client.py"
    assert "geventhttpclient" in _imports(sample) and "sambay_client" in _imports(sample)
