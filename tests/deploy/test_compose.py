"""deploy/compose.yaml: valid against the Compose Specification's JSON schema (the copy vendored
by check-jsonschema, so no network), and wired as a GPU box needs it: a GPU reservation, shared
memory, the model cache volume at the image's HF_HOME, the API key from the environment, a
health check, and Prometheus (profile `monitoring`) scraping the server's /metrics.
``docker compose config`` is run too where the Compose plugin exists (not needed in CI)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from importlib.resources import files
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def _validate(doc: dict) -> None:
    pytest.importorskip("check_jsonschema")
    import jsonschema

    schema = json.loads(files("check_jsonschema").joinpath("builtin_schemas/vendor/compose-spec.json").read_text())
    jsonschema.validators.validator_for(schema)(schema).validate(doc)


def test_compose_file_matches_the_compose_spec():
    _validate(_compose())


@pytest.mark.parametrize("mutation", ["misspelt key", "wrong type", "bad device list"])
def test_compose_schema_rejects_broken_files(mutation):
    import jsonschema

    doc = _compose()
    svc = doc["services"]["sambay"]
    if mutation == "misspelt key":
        svc["enviroment"] = svc.pop("environment")
    elif mutation == "wrong type":
        svc["ports"] = 8000
    else:
        svc["deploy"]["resources"]["reservations"]["devices"] = {"driver": "nvidia"}
    with pytest.raises(jsonschema.ValidationError):
        _validate(doc)


def test_gpu_service_is_wired_for_serving():
    svc = _compose()["services"]["sambay"]
    (device,) = svc["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["count"] == 1 and "gpu" in device["capabilities"]
    assert svc["shm_size"] or svc.get("ipc") == "host"
    assert "hf-cache:/data/hf" in svc["volumes"]  # the image's HF_HOME
    assert svc["build"]["dockerfile"] == "deploy/docker/Dockerfile" and svc["build"]["context"] == ".."
    assert (DEPLOY / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
    # The key is interpolated at run time and required; no literal key in the file.
    assert re.fullmatch(r"\$\{SAMBAY_API_KEY:\?[^}]*\}", svc["environment"]["SAMBAY_API_KEY"])
    assert "/health" in " ".join(svc["healthcheck"]["test"])
    assert svc["ports"] == ["${SAMBAY_PORT:-8000}:8000"]


def test_prometheus_is_optional_and_scrapes_the_server():
    doc = _compose()
    prom = doc["services"]["prometheus"]
    assert prom["profiles"] == ["monitoring"], "off unless asked for"
    assert re.fullmatch(r"prom/prometheus:v\d+\.\d+\.\d+", prom["image"])
    mount = next(v for v in prom["volumes"] if v.endswith("/etc/prometheus/prometheus.yml:ro"))
    config_file = DEPLOY / mount.split(":")[0]
    config = yaml.safe_load(config_file.read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    (target,) = job["static_configs"][0]["targets"]
    host, port = target.split(":")
    assert host in doc["services"] and port == doc["services"][host]["ports"][0].rsplit(":", 1)[1]


def test_env_example_and_gitignore_keep_keys_out_of_git():
    example = (DEPLOY / ".env.example").read_text()
    assert re.search(r"^SAMBAY_API_KEY=$", example, re.M), "the example carries no key"
    assert ".env" in (DEPLOY / ".gitignore").read_text().split()


@pytest.mark.skipif(shutil.which("docker") is None, reason="docker CLI not installed")
def test_docker_compose_config_accepts_it(tmp_path):
    if subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30).returncode != 0:
        pytest.skip("docker CLI without the Compose plugin")
    env = {"SAMBAY_API_KEY": "sk-example", "PATH": "/usr/bin:/bin:/usr/local/bin"}
    result = subprocess.run(
        ["docker", "compose", "-f", str(DEPLOY / "compose.yaml"), "--profile", "monitoring", "config", "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
