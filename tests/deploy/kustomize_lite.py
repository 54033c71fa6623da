"""A renderer for exactly the kustomize features deploy/k8s uses, so CI can render the overlays on
machines without kubectl. Anything else in a kustomization is refused, not ignored: a new feature
must be added here (and stays checked against ``kubectl kustomize`` wherever kubectl exists).

Supported: ``resources`` (files, multi-document, and directories holding a kustomization),
``namespace``, ``labels`` (metadata only: no selectors, no templates), ``images`` (name, newName,
newTag, digest) and ``patches`` (strategic merge on Deployments, JSON 6902 on anything; from
``path`` or inline ``patch``, with an optional ``target`` of kind/name). Transformers run in
kustomize's order: namespace, patches, labels, images.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "patches"}
CLUSTER_SCOPED = {
    "Namespace",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
    "IngressClass",
}
# Strategic-merge keys of the lists a Deployment patch may touch; other lists are replaced.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
}

Obj = dict[str, Any]


class Unsupported(ValueError):
    """A kustomization uses something this renderer does not implement."""


def render(directory: str | Path) -> list[Obj]:
    """Render the kustomization in ``directory`` into a list of objects."""
    root = Path(directory)
    kfile = next((root / n for n in KUSTOMIZATION_NAMES if (root / n).is_file()), None)
    if kfile is None:
        raise FileNotFoundError(f"no kustomization in {root}")
    k = yaml.safe_load(kfile.read_text()) or {}
    extra = set(k) - SUPPORTED
    if extra:
        raise Unsupported(f"{kfile}: unsupported fields {sorted(extra)}")
    objs: list[Obj] = []
    for res in k.get("resources", []):
        path = (root / res).resolve()
        if path.is_dir():
            objs += render(path)
        else:
            objs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    if "namespace" in k:
        for o in objs:
            if o["kind"] not in CLUSTER_SCOPED:
                o["metadata"]["namespace"] = k["namespace"]
    for p in k.get("patches", []):
        _apply_patch(root, p, objs)
    for entry in k.get("labels", []):
        if entry.get("includeSelectors") or entry.get("includeTemplates"):
            raise Unsupported(f"{kfile}: labels with includeSelectors/includeTemplates")
        for o in objs:
            o["metadata"].setdefault("labels", {}).update(entry["pairs"])
    for image in k.get("images", []):
        for o in objs:
            _set_images(o, image)
    return objs


def _apply_patch(root: Path, p: Obj, objs: list[Obj]) -> None:
    if set(p) - {"path", "patch", "target"}:
        raise Unsupported(f"patch fields {sorted(set(p) - {'path', 'patch', 'target'})}")
    text = (root / p["path"]).read_text() if "path" in p else p["patch"]
    body = yaml.safe_load(text)
    target = p.get("target")
    if target and set(target) - {"kind", "name"}:
        raise Unsupported(f"patch target fields {sorted(target)}")
    if isinstance(body, list):  # JSON 6902
        if not target:
            raise Unsupported("a JSON 6902 patch needs a target")
        hits = [o for o in objs if _matches(o, target)]
        for o in hits:
            for op in body:
                _json6902(o, op)
    else:
        target = target or {"kind": body["kind"], "name": body["metadata"]["name"]}
        hits = [o for o in objs if _matches(o, target)]
        for o in hits:
            if o["kind"] != "Deployment":
                raise Unsupported(f"strategic merge on {o['kind']} (only Deployments)")
            merged = _strategic_merge(o, body)
            o.clear()
            o.update(merged)
    if not hits:
        raise ValueError(f"patch {p.get('path', '(inline)')} matches no object")


def _matches(o: Obj, target: Obj) -> bool:
    return o["kind"] == target.get("kind", o["kind"]) and o["metadata"]["name"] == target.get(
        "name", o["metadata"]["name"]
    )


def _strategic_merge(base: Any, patch: Any, field: str = "") -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        if any(str(key).startswith("$") for key in patch):
            raise Unsupported(f"strategic-merge directive in {sorted(patch)}")
        out = copy.deepcopy(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = _strategic_merge(out[key], value, key)
            else:
                out[key] = copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(patch, list) and field in MERGE_KEYS:
        # Kustomize's order: the patch's items (merged into their base items), then the base
        # items the patch does not name, in their order.
        key = MERGE_KEYS[field]
        by_key = {b.get(key): b for b in base}
        named = {item.get(key) for item in patch}
        out = [
            _strategic_merge(by_key[item.get(key)], item, field) if item.get(key) in by_key else copy.deepcopy(item)
            for item in patch
        ]
        return out + [copy.deepcopy(b) for b in base if b.get(key) not in named]
    return copy.deepcopy(patch)


def _json6902(o: Obj, op: Obj) -> None:
    parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
    parent: Any = o
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    last = parts[-1]
    kind = op["op"]
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if kind == "add":
            parent.insert(index, copy.deepcopy(op["value"]))
        elif kind == "replace":
            parent[index] = copy.deepcopy(op["value"])
        elif kind == "remove":
            del parent[index]
        else:
            raise Unsupported(f"JSON 6902 op {kind}")
        return
    if kind in ("add", "replace"):
        if kind == "replace" and last not in parent:
            raise ValueError(f"replace of missing {op['path']}")
        parent[last] = copy.deepcopy(op["value"])
    elif kind == "remove":
        del parent[last]
    else:
        raise Unsupported(f"JSON 6902 op {kind}")


def _set_images(node: Any, image: Obj) -> None:
    if isinstance(node, list):
        for item in node:
            _set_images(item, image)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key in ("containers", "initContainers") and isinstance(value, list):
            for c in value:
                c["image"] = _new_image(c["image"], image)
        else:
            _set_images(value, image)


def _new_image(current: str, image: Obj) -> str:
    name, sep, rest = current.partition("@")
    if not sep:
        slash = current.rfind("/")
        colon = current.rfind(":")
        name, rest = (current[:colon], current[colon + 1 :]) if colon > slash else (current, "")
    if name != image["name"]:
        return current
    new = image.get("newName", name)
    if "digest" in image:
        return f"{new}@{image['digest']}"
    if "newTag" in image:
        return f"{new}:{image['newTag']}"
    return f"{new}{('@' if sep else ':') + rest if rest else ''}"
