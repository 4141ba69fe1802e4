"""Pydantic configuration for the whole application: one YAML drives `lookahead serve`,
`serve run`/`serve deploy` (as the application's args) and the KubeRay manifests.

Every default and limit a request or a command line can meet is stated here, or read from the
layer below that owns it (the session's defaults and bounds: orchestrator/lookahead.py; what a
verifier kind needs and its guards: verifier/kinds.py); the API, the CLI and the benchmarks
read them from here.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Union, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from orchestrator.lookahead import AUTO, BOUNDS, LookaheadParams
from orchestrator.modes import Mode, ModeName, Schedule
from verifier import kinds
from verifier.kinds import VerifierKind

_SESSION = LookaheadParams()  # the session defaults, as the core states them

#: g, drafted steps per cycle: an integer, or "auto" for the adaptive policy (orchestrator/policy.py)
Depth = Union[Literal["auto"], Annotated[int, Field(ge=BOUNDS["depth"][0], le=BOUNDS["depth"][1])]]

EngineName = Literal["hf", "vllm"]
ENGINES: tuple[str, ...] = get_args(EngineName)
TokenSpeculation = Literal["none", "ngram", "draft_model", "eagle"]

#: the largest max_tokens a request may ask for, unless server.max_tokens_limit says otherwise
MAX_TOKENS_LIMIT = 32768


def bounded(name: str, default: Any = None, **kw: Any) -> Any:
    """A pydantic Field over the core's range for `name` (orchestrator.lookahead.BOUNDS)."""
    lo, hi = BOUNDS[name]
    return Field(default, ge=lo, le=hi, **kw)


class Strict(BaseModel):
    """A model that refuses unknown fields (a typo in a config is an error, not a default)."""

    model_config = ConfigDict(extra="forbid")


class AutoscalingConfig(Strict):
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


class EngineConfig(Strict):
    """One model behind one engine. `model` is a short name, a local path or a hub id."""

    model: str
    engine: EngineName = "hf"
    dtype: str = "auto"
    device: str = "auto"
    # token-level speculation inside each step: none, ngram (prompt lookup), draft_model, eagle
    token_speculation: TokenSpeculation = "none"
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


class RoleDeployment(Strict):
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
    # custom Ray resources each replica asks for, to pin a role to the nodes that advertise them
    # (e.g. {"node_target": 1} on a cluster whose target nodes start with --resources)
    resources: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _custom_only(self) -> "RoleDeployment":
        builtin = sorted(set(self.resources) & {"CPU", "GPU", "memory", "object_store_memory"})
        if builtin:
            raise ValueError(f"resources: {builtin} are Ray's own; set num_cpus / num_gpus instead")
        return self


class WarmupConfig(Strict):
    """What an engine replica runs before Serve may route to it (deployments/serve/warmup.py): the
    calls its role will serve, so the first requests after ready do not pay the engine's first-call
    costs. The target decodes batches of step continuations, the draft a chain of steps (its
    siblings batched), a judge (or the target, under target-score) rules on verdict batches."""

    enabled: bool = True
    # tokens per warm-up step: enough for every decode path (prefill, a few decode and lookup
    # steps), short enough that the warm-up costs seconds
    max_step_tokens: int = Field(8, ge=1, le=256)
    # rows per target call and pairs per verdict call; None: 1, 2, 4, ... up to the largest the
    # defaults ask for (depth + 1 target rows, depth x width verdicts; depth "auto": its max_depth)
    batch_sizes: list[Annotated[int, Field(ge=1, le=256)]] | None = None


class RoleConfig(Strict):
    engine: EngineConfig
    deployment: RoleDeployment = Field(default_factory=RoleDeployment)
    warmup: WarmupConfig = Field(default_factory=WarmupConfig)


class VerifierConfig(Strict):
    kind: VerifierKind = "exact"
    threshold: float | None = None  # per-kind default when unset
    # guards in front of every semantic verifier (embedding, llm-judge, target-score), measured
    # on the labelled step pairs (docs/verifiers.md): a changed number, a plan step missing an item
    numeric_guard: bool = kinds.NUMERIC_GUARD
    plan_guard: bool = kinds.PLAN_GUARD
    embedding_model: str = "minilm-l6"


class LookaheadDefaults(Strict):
    """Per-request defaults: what a request that does not set an option gets."""

    mode: ModeName = _SESSION.mode
    depth: Depth = AUTO
    width: int = bounded("width", _SESSION.width)
    schedule: Schedule = _SESSION.schedule
    max_step_tokens: int = bounded("max_step_tokens", _SESSION.max_step_tokens)
    max_tokens: int = Field(_SESSION.max_tokens, ge=1)
    temperature: float = Field(_SESSION.target_sampling.temperature, ge=0)
    top_p: float = Field(_SESSION.target_sampling.top_p, gt=0, le=1)
    top_k: int = Field(_SESSION.target_sampling.top_k, ge=0)


class ServerConfig(Strict):
    served_model_name: str = "lookahead"
    http_port: int = 8000
    grpc_port: int = 9000
    request_timeout_s: float = Field(600, gt=0)  # default deadline; a request may ask for less
    draft_timeout_s: float = Field(120, gt=0)  # a slower draft/judge call degrades to target-only
    judge_timeout_s: float = Field(120, gt=0)
    target_retries: int = Field(1, ge=0, le=5)  # a dead target replica is retried on another one
    max_tokens_limit: int = Field(MAX_TOKENS_LIMIT, ge=1)
    # Orchestrator -> engine handles: results through the object store (True) or Serve's
    # interdeployment gRPC transport (False); see benchmarks/serving/serve_overhead.py for the measurement.
    handle_by_reference: bool = True
    api_keys_env: str = "LOOKAHEAD_API_KEYS"
    api_keys_file: str | None = None
    max_body_bytes: int = Field(1 << 20, ge=1024)
    # Whether draft and target share one device, so that every second of drafting is taken from
    # the target's answers (the depth policy then costs a draft as paid by every answer on the
    # target). None: read from the placement (AppConfig.draft_shares_target_device).
    shared_devices: bool | None = None
    orchestrator: RoleDeployment = Field(default_factory=lambda: RoleDeployment(max_ongoing_requests=64))
    # The ingress's max_ongoing_requests + max_queued_requests (-1: no limit) is how many generation
    # requests one ingress replica holds at once; it counts them itself and answers 503 beyond
    # that (Serve is given no limit for it: its proxy would answer in plain text).
    ingress: RoleDeployment = Field(default_factory=lambda: RoleDeployment(max_ongoing_requests=128))


class AppConfig(Strict):
    target: RoleConfig
    draft: RoleConfig | None = None
    judge: RoleConfig | None = None
    verifier: VerifierConfig = Field(default_factory=VerifierConfig)
    defaults: LookaheadDefaults = Field(default_factory=LookaheadDefaults)
    server: ServerConfig = Field(default_factory=ServerConfig)

    @model_validator(mode="after")
    def _roles(self) -> "AppConfig":
        for role in kinds.needs(self.verifier.kind).roles:
            if getattr(self, role) is None:
                raise ValueError(f"verifier.kind {self.verifier.kind!r} needs a {role} role")
        mode = Mode.parse(self.defaults.mode)
        if mode.steps and self.draft is None:
            raise ValueError(f"defaults.mode {mode.name!r} needs a draft role")
        mode.run_on(self.target.engine.token_speculation != "none")  # ValueError: sd on a target without it
        return self

    def draft_shares_target_device(self) -> bool:
        """Whether the draft's steps run on the target's device: unless `server.shared_devices`
        says, yes except where each role has one of its own (disjoint vLLM-CPU cores, or whole
        GPUs each; fractions of GPUs may be fractions of one)."""
        if self.server.shared_devices is not None:
            return self.server.shared_devices
        if self.draft is None:
            return False
        t, d = self.target, self.draft
        if t.deployment.num_gpus >= 1 and d.deployment.num_gpus >= 1:
            return False
        if t.engine.cpu_cores and d.engine.cpu_cores:
            return bool(_cores(t.engine.cpu_cores) & _cores(d.engine.cpu_cores))  # overlapping cores
        return True

    @classmethod
    def for_models(cls, target: str, draft: str | None = None, judge: str | None = None, *, mode: str | None = None,
                   engine: str | None = None, device: str | None = None, dtype: str | None = None,
                   batch_invariant: bool = False, sd_tokens: int | None = None, verifier: str | None = None,
                   threshold: float | None = None, numeric_guard: bool | None = None,
                   target_cores: str | None = None, draft_cores: str | None = None,
                   **defaults: Any) -> "AppConfig":
        """The config of an in-process run of one mode (`lookahead generate`, the benchmarks): the
        target speculates tokens when the mode has a token layer (n-gram, `sd_tokens` per step),
        the draft and judge are there only when the mode drafts steps. `defaults` are
        LookaheadDefaults fields; every argument left None takes this config's default;
        `target_cores` / `draft_cores` pin a vLLM-CPU engine's threads (the cpu-split profile). Without
        drafts the verifier is never asked, so it is the plain exact one (needing no judge)."""
        layers = Mode.parse(mode or LookaheadDefaults().mode)
        common = _given(engine=engine, device=device, dtype=dtype, batch_invariant=batch_invariant)
        speculation = {"token_speculation": "ngram", **_given(num_speculative_tokens=sd_tokens)} if layers.tokens else {}
        return cls(
            target=RoleConfig(engine=EngineConfig(model=target, **speculation, **common, **_given(cpu_cores=target_cores))),
            draft=RoleConfig(engine=EngineConfig(model=draft, **common, **_given(cpu_cores=draft_cores)))
            if layers.steps and draft else None,
            judge=RoleConfig(engine=EngineConfig(model=judge, **common)) if layers.steps and judge else None,
            verifier=VerifierConfig(**_given(kind=verifier, threshold=threshold, numeric_guard=numeric_guard))
            if layers.steps else VerifierConfig(),
            defaults=LookaheadDefaults(mode=layers.name, **_given(**defaults)),
        )


def _given(**kw: Any) -> dict[str, Any]:
    """The keyword arguments that were given (None: take the model's default)."""
    return {k: v for k, v in kw.items() if v is not None}


def _cores(spec: str) -> set[int]:
    """"0-3,6" -> {0, 1, 2, 3, 6}"""
    out: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out
