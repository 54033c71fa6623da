"""Schema validation of Kubernetes objects: core kinds strictly against the Kubernetes OpenAPI
schemas shipped by ``kubernetes-validate`` (unknown fields rejected), custom resources against the
minimal hand-written schemas in ``crd_schemas/`` plus their embedded pod templates as core
``PodTemplateSpec``s (strictly as well)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

K8S_VERSION = "1.37"
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject.json",
    ("ray.io/v1", "RayService"): "rayservice.json",
}
SCHEMA_DIR = Path(__file__).with_name("crd_schemas")


@cache
def _crd_validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMA_DIR / name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def is_custom(obj: dict[str, Any]) -> bool:
    return (obj.get("apiVersion"), obj.get("kind")) in CRD_SCHEMAS


def validate_object(obj: dict[str, Any]) -> str:
    """Raise on the first schema violation; return how the object was checked ("strict" or "crd")."""
    import kubernetes_validate

    key = (obj.get("apiVersion"), obj.get("kind"))
    if key not in CRD_SCHEMAS:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        return "strict"
    _crd_validator(CRD_SCHEMAS[key]).validate(obj)
    for where, template in pod_templates(obj):
        wrapper = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "embedded"}, "template": template}
        try:
            kubernetes_validate.validate(wrapper, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{obj['kind']} {where}: {exc.message}") from exc
    return "crd"


def pod_templates(obj: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The pod templates a custom resource embeds (KubeRay head and worker groups)."""
    if obj.get("kind") != "RayService":
        return []
    cluster = obj["spec"]["rayClusterConfig"]
    found = [("headGroupSpec", cluster["headGroupSpec"]["template"])]
    found += [(f"workerGroupSpecs[{g['groupName']}]", g["template"]) for g in cluster.get("workerGroupSpecs", [])]
    return found
