"""The KubeRay v1.7.0 schemas and the readers of the generated manifests that the k8s tests share."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from deployments.kuberay import profiles
from tests.support.paths import FIXTURES, ROOT

SCHEMA_DIR = FIXTURES / "kuberay-v1.7.0"
RAYSERVICE_SCHEMA = json.loads((SCHEMA_DIR / "rayservice-v1.json").read_text())
RAYCLUSTER_SCHEMA = json.loads((SCHEMA_DIR / "raycluster-v1.json").read_text())
EPS = 1e-9
MANIFESTS = {name: k.manifest for name, k in profiles.K8S_PROFILES.items()}

# ObjectMeta fields a manifest may set (the CRD schemas leave top-level metadata open).
OBJECT_META_KEYS = {"name", "namespace", "labels", "annotations", "generateName", "finalizers", "ownerReferences"}

# A strict subset of core/v1 for the plain Kubernetes objects we generate.
_META = {"type": "object", "additionalProperties": False, "required": ["name"], "properties": {
    "name": {"type": "string"}, "namespace": {"type": "string"},
    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    "annotations": {"type": "object", "additionalProperties": {"type": "string"}}}}
SERVICE_SCHEMA = {"type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
                  "properties": {
                      "apiVersion": {"const": "v1"}, "kind": {"const": "Service"}, "metadata": _META,
                      "spec": {"type": "object", "additionalProperties": False, "required": ["ports", "selector"],
                               "properties": {
                                   "type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                                   "selector": {"type": "object", "additionalProperties": {"type": "string"}},
                                   "ports": {"type": "array", "minItems": 1, "items": {
                                       "type": "object", "additionalProperties": False, "required": ["port"],
                                       "properties": {"name": {"type": "string"}, "port": {"type": "integer"},
                                                      "targetPort": {"type": ["integer", "string"]},
                                                      "protocol": {"enum": ["TCP", "UDP", "SCTP"]},
                                                      "appProtocol": {"type": "string"}}}}}}}}
PVC_SCHEMA = {"type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
              "properties": {
                  "apiVersion": {"const": "v1"}, "kind": {"const": "PersistentVolumeClaim"}, "metadata": _META,
                  "spec": {"type": "object", "additionalProperties": False, "required": ["accessModes", "resources"],
                           "properties": {
                               "accessModes": {"type": "array", "items": {"enum": [
                                   "ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"]}},
                               "volumeMode": {"enum": ["Filesystem", "Block"]},
                               "storageClassName": {"type": "string"},
                               "resources": {"type": "object", "additionalProperties": False, "properties": {
                                   "requests": {"type": "object", "additionalProperties": False, "required": ["storage"],
                                                "properties": {"storage": {"type": "string"}}}}}}}}}



def load_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def manifest_docs(profile: str) -> list[dict]:
    return load_docs(ROOT / "k8s" / MANIFESTS[profile])


def the_rayservice(docs: list[dict]) -> dict:
    (rs,) = [d for d in docs if d.get("kind") == "RayService"]
    return rs


def unknown_fields(instance, schema: dict, path: str = "") -> list[str]:
    """Paths of keys in ``instance`` that ``schema`` does not define.

    Follows ``properties`` (and ``additionalProperties`` / ``items`` schemas); stops where the
    schema is free-form (``x-kubernetes-preserve-unknown-fields`` or an object without
    properties), since nothing more can be said there."""
    errors: list[str] = []
    if isinstance(instance, dict):
        props = schema.get("properties")
        addl = schema.get("additionalProperties")
        if props is not None:
            for key, value in instance.items():
                if key in props:
                    errors += unknown_fields(value, props[key], f"{path}.{key}")
                elif isinstance(addl, dict):
                    errors += unknown_fields(value, addl, f"{path}.{key}")
                elif addl is True or schema.get("x-kubernetes-preserve-unknown-fields"):
                    continue
                else:
                    errors.append(f"{path}.{key}")
        elif isinstance(addl, dict):
            for key, value in instance.items():
                errors += unknown_fields(value, addl, f"{path}.{key}")
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for i, value in enumerate(instance):
            errors += unknown_fields(value, schema["items"], f"{path}[{i}]")
    return errors


def pod_templates(rs: dict) -> list[tuple[str, dict]]:
    rc = rs["spec"]["rayClusterConfig"]
    out = [("head", rc["headGroupSpec"]["template"])]
    out += [(g["groupName"], g["template"]) for g in rc.get("workerGroupSpecs", [])]
    return out
