"""deploy/k8s: every overlay renders, every object validates (core kinds strictly against the
Kubernetes 1.37 schemas, custom resources against crd_schemas/), and the objects are wired to
each other the way a cluster needs (selectors, ports, probes, secrets, GPU, autoscaling)."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

pytest.importorskip("kubernetes_validate")
import kustomize_lite  # noqa: E402
from manifest_schemas import validate_object  # noqa: E402

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
OVERLAYS = {
    "gpu-h100": {
        "Deployment",
        "Service",
        "PersistentVolumeClaim",
        "PodDisruptionBudget",
        "ServiceMonitor",
        "ScaledObject",
    },
    "cpu-demo": {"Deployment", "Service", "PersistentVolumeClaim", "PodDisruptionBudget"},
}


def _render(overlay: str) -> list[dict]:
    return kustomize_lite.render(K8S / "overlays" / overlay)


def _one(objs: list[dict], kind: str) -> dict:
    found = [o for o in objs if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def _key(o: dict) -> tuple:
    return o["apiVersion"], o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_overlay_renders_and_every_object_validates(overlay):
    objs = _render(overlay)
    assert {o["kind"] for o in objs} == OVERLAYS[overlay]
    checked = {o["kind"]: validate_object(o) for o in objs}
    assert {k for k, how in checked.items() if how == "crd"} == {"ServiceMonitor", "ScaledObject"} & OVERLAYS[overlay]
    assert len({_key(o) for o in objs}) == len(objs)
    # Secrets are created by the operator of the cluster, never shipped.
    assert not [o for o in objs if o["kind"] == "Secret"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed: own renderer only")
@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_kubectl_kustomize_renders_the_same(overlay):
    out = subprocess.run(
        ["kubectl", "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    theirs = {_key(o): o for o in yaml.safe_load_all(out) if o}
    mine = {_key(o): o for o in _render(overlay)}
    assert sorted(mine) == sorted(theirs)
    for key in mine:
        assert mine[key] == theirs[key], key


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_objects_are_wired_together(overlay):
    objs = _render(overlay)
    dep, svc, pdb, pvc = (
        _one(objs, k) for k in ("Deployment", "Service", "PodDisruptionBudget", "PersistentVolumeClaim")
    )
    pod = dep["spec"]["template"]
    pod_labels = pod["metadata"]["labels"]
    for selector in (
        dep["spec"]["selector"]["matchLabels"],
        svc["spec"]["selector"],
        pdb["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= pod_labels.items()
    (c,) = pod["spec"]["containers"]
    assert "/" in c["image"] and c["image"] != "vllm-sambay", "the overlay must set the image"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 8000}
    assert [p["targetPort"] for p in svc["spec"]["ports"]] == ["http"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": "http"}, probe
    start = c["startupProbe"]
    assert start["periodSeconds"] * start["failureThreshold"] >= 600, "model load needs ~10 min"
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    assert volumes[mounts["/data/hf"]]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    env = {e["name"]: e for e in c["env"]}
    assert env["HF_HOME"]["value"] == "/data/hf"
    for name in ("SAMBAY_API_KEY", "VLLM_API_KEY", "HF_TOKEN"):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert "value" not in env[name] and ref["name"] == "sambay-secrets"
    assert not env["SAMBAY_API_KEY"]["valueFrom"]["secretKeyRef"].get("optional"), "no key, no start"
    security = pod["spec"]["securityContext"]
    assert security["runAsNonRoot"] and security["runAsUser"] != 0
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    assert grace > 30 + c["lifecycle"]["preStop"]["sleep"]["seconds"], "outlast the server's drain"


def test_gpu_overlay_scales_one_h100_per_pod_on_queue_depth():
    objs = _render("gpu-h100")
    dep, svc, monitor, scaler = (_one(objs, k) for k in ("Deployment", "Service", "ServiceMonitor", "ScaledObject"))
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert c["args"][:2] == ["--model", "microsoft/Phi-4-mini-flash-reasoning"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    svc_ports = {p["name"] for p in svc["spec"]["ports"]}
    assert [(e["port"], e["path"]) for e in monitor["spec"]["endpoints"]] == [("http", "/metrics")]
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= svc_ports
    assert scaler["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert scaler["spec"]["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    (trigger,) = scaler["spec"]["triggers"]
    assert trigger["type"] == "prometheus", "scale on queue depth, not cpu/memory"
    query = trigger["metadata"]["query"]
    assert "vllm:num_requests_waiting" in query
    # PromQL is opaque to kustomize's namespace transformer: keep the query in step by hand.
    assert re.search(r'namespace="([^"]+)"', query).group(1) == scaler["metadata"]["namespace"]
    assert re.search(r'service="([^"]+)"', query).group(1) == svc["metadata"]["name"]
    assert scaler["spec"]["minReplicaCount"] >= 1 and scaler["spec"]["maxReplicaCount"] > 1


def test_cpu_demo_needs_no_gpu_and_serves_the_tiny_checkpoint():
    objs = _render("cpu-demo")
    text = yaml.safe_dump_all(objs)
    assert "nvidia.com/gpu" not in text
    (c,) = _one(objs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert "--model" not in c["args"]  # sambay-serve without --model: the tiny checkpoint
    assert c["image"].endswith("-cpu")
    assert c["resources"]["limits"]["memory"]


def test_secret_template_holds_placeholders_only():
    secret = yaml.safe_load((K8S / "secret.example.yaml").read_text())
    assert validate_object(secret) == "strict"
    assert secret["metadata"]["name"] == "sambay-secrets"
    assert set(secret["stringData"]) == {"api-key", "hf-token"}
    assert all(v.startswith("REPLACE_") for v in secret["stringData"].values())


@pytest.mark.parametrize(
    "mutation",
    [
        "no selector",
        "misspelt field",
        "string replicas",
        "no trigger",
        "trigger threshold as number",
        "monitor without endpoints",
    ],
)
def test_validators_reject_broken_objects(mutation):
    """The checks above are only worth something if a broken manifest fails them."""
    import jsonschema

    objs = {o["kind"]: o for o in _render("gpu-h100")}
    dep, scaler, monitor = (copy.deepcopy(objs[k]) for k in ("Deployment", "ScaledObject", "ServiceMonitor"))
    c = dep["spec"]["template"]["spec"]["containers"][0]
    broken = {
        "no selector": lambda: dep["spec"].pop("selector") and dep,
        "misspelt field": lambda: c.update(livenesProbe=c.pop("livenessProbe")) or dep,
        "string replicas": lambda: dep["spec"].update(replicas="one") or dep,
        "no trigger": lambda: scaler["spec"].pop("triggers") and scaler,
        "trigger threshold as number": lambda: scaler["spec"]["triggers"][0]["metadata"].update(threshold=5) or scaler,
        "monitor without endpoints": lambda: monitor["spec"].pop("endpoints") and monitor,
    }[mutation]()
    with pytest.raises(jsonschema.ValidationError):
        validate_object(broken)


def test_renderer_refuses_what_it_does_not_implement(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("resources: []\ncommonLabels: {a: b}\n")
    with pytest.raises(kustomize_lite.Unsupported):
        kustomize_lite.render(tmp_path)
    (tmp_path / "kustomization.yaml").write_text("resources: []\nlabels: [{pairs: {a: b}, includeSelectors: true}]\n")
    with pytest.raises(kustomize_lite.Unsupported):
        kustomize_lite.render(tmp_path)


def test_renderer_merges_and_patches_like_kustomize(tmp_path):
    """Semantics the kubectl comparison checks where kubectl exists, pinned here for where it does not."""
    base = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "a", "image": "img:1", "args": ["x"], "env": [{"name": "E", "value": "1"}]},
                        {"name": "b", "image": "other"},
                    ],
                    "volumes": [{"name": "v", "emptyDir": {"medium": "Memory"}}],
                }
            }
        },
    }
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(base))
    patch = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {
            "template": {
                "spec": {
                    "containers": [{"name": "a", "args": ["y"], "env": [{"name": "F", "value": "2"}]}],
                    "volumes": [{"name": "v", "emptyDir": {"sizeLimit": "1Gi"}}],
                }
            }
        },
    }
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(patch))
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": ["d.yaml"],
                "namespace": "ns",
                "patches": [
                    {"path": "p.yaml"},
                    {
                        "target": {"kind": "Deployment", "name": "d"},
                        "patch": "- {op: add, path: /spec/template/spec/containers/1/args, value: [z]}",
                    },
                ],
                "labels": [{"pairs": {"l": "v"}}],
                "images": [{"name": "img", "newName": "reg/img", "newTag": "2"}],
            }
        )
    )
    (d,) = kustomize_lite.render(tmp_path)
    a, b = d["spec"]["template"]["spec"]["containers"]
    assert a == {
        "name": "a",
        "image": "reg/img:2",
        "args": ["y"],
        "env": [{"name": "F", "value": "2"}, {"name": "E", "value": "1"}],
    }
    assert b == {"name": "b", "image": "other", "args": ["z"]}
    assert d["spec"]["template"]["spec"]["volumes"] == [
        {"name": "v", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}
    ]
    assert d["metadata"] == {"name": "d", "namespace": "ns", "labels": {"l": "v"}}
    assert "labels" not in d["spec"]["template"].get("metadata", {})
