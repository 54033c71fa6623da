"""Each fact has one home: the paper's preset is written once (sambay_client/workload.py), and
what the code cites is in the repository's docs/, not in design notes or on a machine."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

from sambay_client.workload import PAPER, PAPER_REQUESTS_RULE

REPO = Path(__file__).resolve().parents[2]
HOME = REPO / "sambay_client" / "workload.py"
PACKAGES = ("sambay_client", "sambay_bench", "loadtest")


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def paper_literals(path: Path) -> list[str]:
    """Where ``path`` writes one of the paper's lengths as a number, or a text naming them or the
    request rule. Docstrings explain the method and are left out; so are slice bounds (the tail of a
    log, not a workload)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Slice):
            skip.update(id(n) for n in ast.walk(node))
    numbers = {PAPER.prompt_tokens, PAPER.output_tokens}
    text = re.compile(rf"\b({'|'.join(map(str, numbers))})\b|{re.escape(PAPER_REQUESTS_RULE)}")
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Constant) or id(node) in skip:
            continue
        value = node.value
        if (isinstance(value, int | float) and not isinstance(value, bool) and value in numbers) or (
            isinstance(value, str) and text.search(value)
        ):
            found.append(f"{path.relative_to(REPO)}:{node.lineno}: {value!r}")
    return found


def test_the_paper_preset_is_written_once():
    assert len(paper_literals(HOME)) >= 2  # the check sees the preset where it is defined
    elsewhere = [
        hit
        for pkg in PACKAGES
        for path in sorted((REPO / pkg).rglob("*.py"))
        if path != HOME
        for hit in paper_literals(path)
    ]
    assert not elsewhere, "write these from sambay_client.workload.PAPER:\n" + "\n".join(elsewhere)


# Results directories keep the exact command a run used, machine paths included: a record, not a citation.
RECORDS = ("benchmarks/results/",)
TEXT = (".py", ".md", ".sh", ".toml", ".yaml", ".yml", ".cfg", ".txt", "Dockerfile")
OUTSIDE = re.compile(r"shared/design|\.\./shared|/work/|(?<![\w/])design/\w+\.md")
# The design notes by their bare names (there is no docs/ page of these names).
DESIGN_NOTE = re.compile(r"(?<![\w/-])(architecture|benchmark|layout|serving|vllm-integration|vllm-034)\.md\b")
# Still citing the architecture notes: tests of the layer layout and the tiny config, whose facts have
# no docs/ page yet. Take a file off this list when it cites docs/ instead; the test fails if it could.
NOT_YET = {"tests/unit/test_config.py", "tests/unit/test_tiny.py"}
CITED_DOC = re.compile(r"(?<![\w/.])docs/[\w./-]+\.md")


def _tracked() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], capture_output=True, text=True, cwd=REPO, check=True).stdout
    return [
        REPO / name
        for name in out.splitlines()
        if name.endswith(TEXT) and not name.startswith(RECORDS) and (REPO / name).is_file()
    ]


def test_what_the_code_cites_is_in_the_repository():
    outside, missing, still = [], [], set()
    for path in _tracked():
        if path == Path(__file__):
            continue
        rel = str(path.relative_to(REPO))
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            bare = DESIGN_NOTE.search(line) and rel in NOT_YET
            still.update([rel] if bare else [])
            if OUTSIDE.search(line) or (DESIGN_NOTE.search(line) and not bare):
                outside.append(f"{rel}:{n}: {line.strip()[:120]}")
            for cited in CITED_DOC.findall(line):
                if not (REPO / cited).is_file():
                    missing.append(f"{rel}:{n}: {cited}")
    assert not outside, "cites design notes or machine paths outside the repository:\n" + "\n".join(outside)
    assert not missing, "cites docs that do not exist:\n" + "\n".join(missing)
    assert still == NOT_YET, f"no longer cites the design notes, take it off NOT_YET: {sorted(NOT_YET - still)}"
