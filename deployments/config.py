"""Pydantic configuration for the whole application: one YAML drives `lookahead serve`,
`serve run`/`serve deploy` (as the application's args) and the KubeRay manifests."""
from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from orchestrator.modes import Mode, Schedule, VerifierKind


#: g, drafted steps per cycle: an integer, or "auto" for the adaptive policy (orchestrator/policy.py)
Depth = Union[Literal["auto"], Annotated[int, Field(ge=0, le=16)]]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AutoscalingConfig(_Strict):
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: float = Field(4, gt=0)
    # How long a need must last before Serve adds or removes a replica; None keeps Serve's own
    # defaults (30 s up, 600 s down: an engine replica that took minutes to load is not dropped
    # at the first lull).
    upscale_delay_s: float | None = Field(None, ge=0)
    downscale_delay_s: float | None = Field(None, ge=0)

    def serve_options(self) -> dict:
        """Serve's autoscaling_config for this role (the delays only when set)."""
        out = {"min_replicas": self.min_replicas, "max_replicas": self.max_replicas,
               "target_ongoing_requests": self.target_ongoing_requests}
        out.update({k: v for k in ("upscale_delay_s", "downscale_delay_s") if (v := getattr(self, k)) is not None})
        return out

    @model_validator(mode="after")
    def _bounds(self) -> "AutoscalingConfig":
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must be <= max_replicas")
        return self


class EngineConfig(_Strict):
    """One model behind one engine. `model` is a short name, a local path or a hub id."""

    model: str
    engine: Literal["hf", "vllm"] = "hf"
    dtype: str = "auto"
    device: str = "auto"
    # token-level speculation inside each step: none, ngram (prompt lookup), draft_model, eagle
    token_speculation: Literal["none", "ngram", "draft_model", "eagle"] = "none"
    num_speculative_tokens: int = Field(4, ge=1, le=16)
    speculative_model: str | None = None
    # Override the tokenizer key (normally a hash of the vocabulary). Engines with equal keys pass
    # token ids; different keys make steps cross as text, re-encoded by the receiving engine.
    tokenizer_key: str | None = None
    batch_invariant: bool = False  # run rows one by one: bit-identical greedy results
    # hf engine decode loop: static (fixed-shape KV cache, CUDA-graph captured step; see
    # deployments/engines/static_decode.py), dynamic (plain eager loop) or auto (static on CUDA)
    decode: Literal["auto", "dynamic", "static"] = "auto"
    cpu_threads: int | None = Field(None, ge=1)  # torch threads on CPU (Ray sets OMP_NUM_THREADS=1 in actors)
    # vLLM-CPU: the cores this engine's threads are bound to (VLLM_CPU_OMP_THREADS_BIND), e.g. "1" or
    # "0-3"; unset: every core the process may use. Disjoint sets give draft and target their own cores.
    cpu_cores: str | None = Field(None, pattern=r"^\d+(-\d+)?(,\d+(-\d+)?)*$")
    engine_kwargs: dict[str, Any] = Field(default_factory=dict)  # passed through (vLLM EngineArgs)


class RoleDeployment(_Strict):
    """Ray Serve placement and scaling for one role (draft, target, judge)."""

    num_gpus: float = Field(0, ge=0)
    num_cpus: float = Field(1, ge=0)
    max_ongoing_requests: int = Field(16, ge=1)
    max_queued_requests: int = Field(64, ge=-1)
    autoscaling: AutoscalingConfig = Field(default_factory=AutoscalingConfig)
    # Serve calls each replica's check_health this often; a replica whose check raises (an engine
    # whose worker died) or takes longer than the timeout is replaced.
    health_check_period_s: float = Field(10, gt=0)
    health_check_timeout_s: float = Field(30, gt=0)


class RoleConfig(_Strict):
    engine: EngineConfig
    deployment: RoleDeployment = Field(default_factory=RoleDeployment)


class VerifierConfig(_Strict):
    kind: VerifierKind = "exact"
    threshold: float | None = None  # per-kind default when unset
    # guards in front of every semantic verifier (embedding, llm-judge, target-score), measured
    # on the labelled step pairs (docs/verifiers.md): a changed number, a plan step missing an item
    numeric_guard: bool = True
    plan_guard: bool = True
    embedding_model: str = "minilm-l6"


class LookaheadDefaults(_Strict):
    mode: Mode = "lr"
    depth: Depth = "auto"
    width: int = Field(1, ge=1, le=8)
    schedule: Schedule = "sync"
    max_step_tokens: int = Field(100, ge=1, le=4096)
    max_tokens: int = Field(512, ge=1)
    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)


class ServerConfig(_Strict):
    served_model_name: str = "lookahead"
    http_port: int = 8000
    grpc_port: int = 9000
    request_timeout_s: float = Field(600, gt=0)  # default deadline; a request may ask for less
    draft_timeout_s: float = Field(120, gt=0)  # a slower draft/judge call degrades to target-only
    judge_timeout_s: float = Field(120, gt=0)
    target_retries: int = Field(1, ge=0, le=5)  # a dead target replica is retried on another one
    max_tokens_limit: int = Field(32768, ge=1)
    # Orchestrator -> engine handles: results through the object store (True) or Serve's
    # interdeployment gRPC transport (False); see benchmarks/serve_overhead.py for the measurement.
    handle_by_reference: bool = True
    api_keys_env: str = "LOOKAHEAD_API_KEYS"
    api_keys_file: str | None = None
    max_body_bytes: int = Field(1 << 20, ge=1024)
    orchestrator: RoleDeployment = Field(default_factory=lambda: RoleDeployment(max_ongoing_requests=64))
    ingress: RoleDeployment = Field(default_factory=lambda: RoleDeployment(max_ongoing_requests=128))


class AppConfig(_Strict):
    target: RoleConfig
    draft: RoleConfig | None = None
    judge: RoleConfig | None = None
    verifier: VerifierConfig = Field(default_factory=VerifierConfig)
    defaults: LookaheadDefaults = Field(default_factory=LookaheadDefaults)
    server: ServerConfig = Field(default_factory=ServerConfig)

    @model_validator(mode="after")
    def _roles(self) -> "AppConfig":
        if self.verifier.kind == "llm-judge" and self.judge is None:
            raise ValueError("verifier.kind 'llm-judge' needs a judge role")
        if self.defaults.mode.startswith("lr") and self.draft is None:
            raise ValueError(f"defaults.mode {self.defaults.mode!r} needs a draft role")
        return self
