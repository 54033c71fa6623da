"""deploy/ray configuration, without starting Ray: the Serve config and the RayService's embedded
copy validate against Ray Serve's own config schema and agree with each other, the application
builder turns them into the deployment options meant, and the RayService validates (minimal
RayService schema, pod templates strictly as core PodTemplateSpecs)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ray.serve")
from manifest_schemas import pod_templates, validate_object  # noqa: E402

RAY_DIR = Path(__file__).resolve().parents[2] / "deploy" / "ray"
DOCKERFILE = RAY_DIR.parent / "docker" / "Dockerfile"


@pytest.fixture(scope="module")
def sambay_ray():
    import sys

    sys.path.insert(0, str(RAY_DIR))
    try:
        import sambay_ray

        yield sambay_ray
    finally:
        sys.path.remove(str(RAY_DIR))


def _rayservice() -> dict:
    return yaml.safe_load((RAY_DIR / "rayservice.yaml").read_text())


def _configs() -> dict[str, dict]:
    return {
        "serve_config.yaml": yaml.safe_load((RAY_DIR / "serve_config.yaml").read_text()),
        "rayservice serveConfigV2": yaml.safe_load(_rayservice()["spec"]["serveConfigV2"]),
    }


@pytest.mark.parametrize("name", sorted(_configs()))
def test_serve_config_validates_with_ray_serve_schema(name):
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(_configs()[name])
    (app,) = config.applications
    assert app.import_path == "sambay_ray:build" and app.route_prefix == "/"


def test_serve_config_and_rayservice_agree():
    a, b = _configs().values()
    assert a == b, "deploy/ray/serve_config.yaml and rayservice.yaml serveConfigV2 drifted apart"


@pytest.mark.parametrize("name", sorted(_configs()))
def test_builder_turns_the_config_into_autoscaled_gpu_replicas(name, sambay_ray):
    from ray.serve.config import AutoscalingConfig

    (app,) = _configs()[name]["applications"]
    deployment = sambay_ray.build(app["args"])._bound_deployment
    assert deployment.ray_actor_options == {"num_cpus": 4.0, "num_gpus": 1.0}
    assert deployment.max_ongoing_requests == 64
    scaling = AutoscalingConfig(**deployment._deployment_config.autoscaling_config.model_dump())
    assert (scaling.min_replicas, scaling.max_replicas, scaling.target_ongoing_requests) == (1, 4, 16)
    assert deployment.init_args == (["--model", "microsoft/Phi-4-mini-flash-reasoning"],)


def test_builder_takes_a_fixed_replica_count_and_a_string_of_arguments(sambay_ray):
    d = sambay_ray.build({"num_replicas": 3, "server_args": "--model m --max-model-len 4096"})._bound_deployment
    assert d.num_replicas == 3 and d._deployment_config.autoscaling_config is None
    assert d.init_args == (["--model", "m", "--max-model-len", "4096"],)


def test_rayservice_validates_and_matches_the_image():
    svc = _rayservice()
    assert validate_object(svc) == "crd"
    templates = dict(pod_templates(svc))
    assert len(templates) == 2
    ray_version = re.search(r"ARG RAY_VERSION=(\S+)", DOCKERFILE.read_text()).group(1)
    assert svc["spec"]["rayClusterConfig"]["rayVersion"] == ray_version
    worker = templates["workerGroupSpecs[gpu]"]["spec"]["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    env = {e["name"]: e for e in worker["env"]}
    assert env["SAMBAY_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "sambay-secrets"
    assert {m["mountPath"] for m in worker["volumeMounts"]} >= {"/dev/shm", "/data/hf"}
    head = svc["spec"]["rayClusterConfig"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0", "replicas belong on the GPU workers"


def test_rayservice_validation_rejects_a_broken_manifest():
    import jsonschema

    svc = _rayservice()
    svc["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["rayStartParams"] = {"num-gpus": 1}  # not a string
    with pytest.raises(jsonschema.ValidationError):
        validate_object(svc)
    svc = _rayservice()
    del svc["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["name"]
    with pytest.raises(AssertionError, match="name"):
        validate_object(svc)
