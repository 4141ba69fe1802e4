"""The stateful orchestrator: a Serve replica (a Ray actor) that owns each request's session.

It runs the orchestrator/ core against the draft, target and judge deployments through
DeploymentHandles, keeps running totals and exports them as Ray metrics. A session lives
exactly as long as its stream: when the caller goes away the generator is cancelled, which
cancels every in-flight draft/target/judge call of that session.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

from ray import serve

from deployments.api.errors import BadRequest, DeadlineExceeded
from deployments.api.request import RequestSpec
from deployments.config import AppConfig
from deployments.pipeline import build_verifier, lookahead_params
from deployments.serve.errors import public_reason
from deployments.serve.metrics import LookaheadMetrics
from deployments.serve.remote import RemoteEngine, cancel_quietly, response_result
from deployments.serve.request_ids import serve_request_id
from orchestrator.lookahead import Lookahead
from orchestrator.modes import Mode
from orchestrator.policy import PriorBook
from orchestrator.stop_strings import Piece, StopStrings
from orchestrator.types import Stats, step_dict
from verifier.kinds import needs

log = logging.getLogger("ray.serve")


@serve.deployment(max_ongoing_requests=64)
class Orchestrator:
    def __init__(self, config: dict, target, draft=None, judge=None) -> None:
        self.cfg = AppConfig(**config)
        by_ref = self.cfg.server.handle_by_reference
        self.handles = {role: h.options(_by_reference=by_ref) if h is not None else None
                        for role, h in (("target", target), ("draft", draft), ("judge", judge))}
        self.engines: dict[str, RemoteEngine] = {}
        self.info: dict[str, dict] = {}
        self.verifiers: dict[str, object] = {}
        self.sessions: dict[str, Lookahead] = {}
        # the depth policy costs a draft on the target's device as paid by every session in flight
        self.shared_device = self.cfg.draft_shares_target_device()
        self.totals = Stats(mode="all")
        self.priors = PriorBook()  # per model pair, verifier, sampling and schedule: the depth policy's history
        self.requests = 0
        self.started = time.time()
        self._ready = asyncio.Lock()
        self._retry_at: dict[str, float] = {}
        # every series: deployments/serve/metrics.py
        self.metrics = LookaheadMetrics(model_name=self.cfg.server.served_model_name)

    async def _engines(self) -> dict[str, RemoteEngine]:
        """Ask each role for its tokenizer once (lazily: replicas may start in any order)."""
        async with self._ready:
            for role, handle in self.handles.items():
                if handle is None or role in self.engines:
                    continue
                if time.monotonic() < self._retry_at.get(role, 0.0):
                    continue  # recently unavailable: do not make every request wait for it
                try:
                    self.info[role] = await asyncio.wait_for(response_result(handle.info.remote()),
                                                             None if role == "target" else 10)
                except Exception as exc:  # noqa: BLE001
                    if role == "target":
                        raise
                    # a draft/judge that cannot answer: serve target-only, look again in 30 s
                    log.warning("%s deployment unavailable (%s); running without it", role, exc)
                    self._retry_at[role] = time.monotonic() + 30
                    continue
                srv = self.cfg.server
                timeout = {"draft": srv.draft_timeout_s, "judge": srv.judge_timeout_s}.get(role)
                retries = srv.target_retries if role == "target" else 0
                self.engines[role] = RemoteEngine(handle, self.info[role]["tokenizer_key"],
                                                  timeout_s=timeout, retries=retries,
                                                  role=role, observe=self.metrics.engine_call)
        return self.engines

    def _verifier(self, kind: str):
        if kind not in self.verifiers:
            vcfg = self.cfg.verifier.model_copy(update={"kind": kind})
            self.verifiers[kind] = build_verifier(vcfg, target=self.engines["target"], judge=self.engines.get("judge"))
        return self.verifiers[kind]

    async def _session(self, spec: RequestSpec) -> tuple[Lookahead, int, tuple]:
        engines = await self._engines()
        options = spec.options
        kind = options.verifier or self.cfg.verifier.kind
        mode = Mode.parse(options.mode or self.cfg.defaults.mode)
        if mode.steps and self.handles["draft"] is None:
            raise BadRequest(f"mode {mode.name!r} needs a draft deployment, none is configured", "lookahead.mode")
        for role in needs(kind).roles:
            if self.handles[role] is None:
                raise BadRequest(f"verifier {kind!r} needs a {role} deployment, none is configured",
                                 "lookahead.verifier")
        limit = self.cfg.server.max_tokens_limit
        if (options.max_tokens or 0) > limit:
            raise BadRequest(f"max_tokens must be <= {limit} on this server", "max_tokens")
        token_speculation = self.info["target"].get("token_speculation", "none")
        try:  # the token layer is the target engine's: asked of one without it, refused
            ran = mode.run_on(token_speculation != "none")
        except ValueError as exc:
            raise BadRequest(str(exc), "lookahead.mode") from None
        try:
            params = lookahead_params(self.cfg.defaults, options, token_speculation=token_speculation)
        except ValueError as exc:
            raise BadRequest(str(exc), "lookahead") from exc
        self._check_logit_bias(params, engines)
        self._check_sampling(params)
        self._check_stop_tokens(params, engines)
        prompt = spec.prompt
        prompt_tokens = await engines["target"].prompt_tokens(prompt)  # retried like the steps
        limit = self.info["target"]["max_context"]
        if prompt_tokens + params.max_tokens > limit:
            raise BadRequest(f"prompt ({prompt_tokens} tokens) plus max_tokens ({params.max_tokens}) exceeds the "
                             f"model's context of {limit} tokens", "messages" if prompt.messages else "prompt")
        # A configured draft/judge that cannot answer right now: this request runs target-only.
        needed = ("draft", *needs(kind).roles)
        missing = [role for role in needed if role not in engines] if params.mode == "lr" else []
        verifier = self._verifier(kind) if params.mode == "lr" and not missing else None
        rid = spec.request_id or serve_request_id()
        # depth "auto" starts from what this replica has measured so far for requests of this kind
        prior_key = PriorBook.key(self.cfg.target.engine.model, self.cfg.draft.engine.model if self.cfg.draft else "",
                                  kind, params.target_sampling.greedy, params.schedule, ran.name)
        session = Lookahead(engines["target"], engines.get("draft"), verifier, prompt, params, rid,
                            prior=self.priors.get(prior_key), shared_device=self.shared_device,
                            load=lambda: len(self.sessions))
        session.stats.degraded += [f"{role}: deployment unavailable" for role in missing]
        return session, prompt_tokens, prior_key

    def _check_sampling(self, params) -> None:
        """A sampling parameter the target (or, drafting, the draft) cannot apply: a 400 naming it."""
        sampling = params.target_sampling
        roles = ("target", "draft") if params.mode == "lr" else ("target",)
        for role in roles:
            refused = (self.info.get(role) or {}).get("refused_sampling") or ()
            if not sampling.greedy and sampling.top_k > 0 and "top_k" in refused:
                raise BadRequest(f"top_k: the {role} engine ({self.info[role]['engine']} on this server) cannot "
                                 "sample with top-k; leave top_k unset (or -1)", "top_k")

    def _check_logit_bias(self, params, engines: dict) -> None:
        bias = params.target_sampling.logit_bias
        if not bias:
            return
        vocab = self.info["target"].get("vocab_size")
        outside = [t for t, _ in bias if vocab is not None and t >= vocab]
        if outside:
            raise BadRequest(f"logit_bias: token id {outside[0]} is outside the target model's vocabulary "
                             f"({vocab} tokens)", "logit_bias")
        draft = engines.get("draft")
        if draft is not None and draft.tokenizer_key != engines["target"].tokenizer_key:
            # The ids name target tokens. A draft with another vocabulary drafts unbiased; the
            # verifier rules on its steps as on any draft (with `exact`, the output is the target's).
            params.draft_sampling = dataclasses.replace(params.draft_sampling, logit_bias=())

    def _check_stop_tokens(self, params, engines: dict) -> None:
        sampling = params.target_sampling
        if sampling.min_tokens > params.max_tokens:
            raise BadRequest(f"min_tokens ({sampling.min_tokens}) must be <= max_tokens ({params.max_tokens})",
                             "min_tokens")
        vocab = self.info["target"].get("vocab_size")
        outside = [t for t in sampling.stop_token_ids if vocab is not None and t >= vocab]
        if outside:
            raise BadRequest(f"stop_token_ids: token id {outside[0]} is outside the target model's vocabulary "
                             f"({vocab} tokens)", "stop_token_ids")
        draft = engines.get("draft")
        if sampling.stop_token_ids and draft is not None and draft.tokenizer_key != engines["target"].tokenizer_key:
            # target ids, as logit_bias: such a draft runs past them and its step is rejected there
            params.draft_sampling = dataclasses.replace(params.draft_sampling, stop_token_ids=())

    async def generate_stream(self, spec: RequestSpec):
        """:meth:`_generate_stream`, metered: every request is counted once it ends, however it
        ends (finished, refused, timed out, cancelled by the client), and logged in one line."""
        meter = self.metrics.request(spec.request_id or serve_request_id(),
                                     spec.options.mode or self.cfg.defaults.mode,
                                     spec.options.verifier or self.cfg.verifier.kind)
        exc: BaseException | None = None
        try:
            async for chunk in self._generate_stream(spec):
                meter.chunk(chunk)
                yield chunk
        except BaseException as e:  # noqa: BLE001 - counted, then re-raised as it was
            exc = e
            raise
        finally:
            meter.finish(exc)

    async def _generate_stream(self, spec: RequestSpec):
        """Yield {"steps": [...]} per cycle, then {"done": True, ...} with the text and stats.

        Stop strings are applied here, over the whole answer: text that could begin a stop
        string waits for the next cycle, and a match ends the session at once.
        """
        try:
            stops = StopStrings(spec.stop, include=spec.options.include_stop_str_in_output)
        except ValueError as exc:
            raise BadRequest(str(exc), "stop") from exc
        timeout = min(float(spec.timeout_s or self.cfg.server.request_timeout_s),
                      self.cfg.server.request_timeout_s)
        deadline = time.monotonic() + timeout
        try:  # the deadline covers the set-up too (a target that does not answer its first call)
            session, prompt_tokens, prior_key = await asyncio.wait_for(self._session(spec), timeout)
        except asyncio.TimeoutError:
            if time.monotonic() < deadline:
                raise  # a timeout of its own inside the set-up, not the deadline
            raise DeadlineExceeded(f"request exceeded its deadline of {timeout:g}s") from None
        rid = session.request_id
        # rejected drafts are unverified small-model text: in the response only when asked for
        rejected = spec.options.rejected_drafts
        self.sessions[rid] = session
        stream = session.stream()
        try:
            yield {"prompt_tokens": prompt_tokens}
            while not stops.stopped:
                try:
                    steps = await asyncio.wait_for(anext(stream), max(0.0, deadline - time.monotonic()))
                except StopAsyncIteration:
                    break
                except asyncio.TimeoutError:
                    raise DeadlineExceeded(f"request exceeded its deadline of {timeout:g}s") from None
                pieces = stops.feed(steps)
                if pieces:
                    yield {"steps": [_piece_dict(p, rejected) for p in pieces]}
            pieces = stops.finish()
            if pieces:
                yield {"steps": [_piece_dict(p, rejected) for p in pieces]}
            await stream.aclose()  # a stop string ends the session before its own end; stats final
            result = stops.result(session.result())
            self._account(result.stats, prior_key)
            yield {"done": True, **result.to_dict(rejected)}
        finally:
            await stream.aclose()  # cancels whatever the session still has in flight
            self.sessions.pop(rid, None)

    async def generate(self, spec: RequestSpec) -> dict:
        out: dict = {}
        async for chunk in self.generate_stream(spec):
            out.update(chunk)
        return out

    def _account(self, st: Stats, prior_key: tuple | None = None) -> None:
        # Running totals: the /stats endpoint; per kind of request, the prior new sessions' depth policy starts from.
        self.requests += 1
        self.totals.accumulate(st)
        if prior_key is not None and st.mode.startswith("lr"):
            self.priors.add(prior_key, st)

    async def stats(self) -> dict:
        totals = self.totals.to_dict()
        steps = self.totals.accepted_steps + self.totals.target_steps
        totals.update(requests=self.requests, active_sessions=len(self.sessions),
                      engine_retries={role: e.retried for role, e in self.engines.items()},
                      steps_per_s=round(steps / self.totals.wall_s, 3) if self.totals.wall_s else 0.0,
                      uptime_s=round(time.time() - self.started, 1))
        try:  # token-level speculation inside the target's steps (one replica's running totals)
            totals["token_speculation"] = await asyncio.wait_for(
                response_result(self.handles["target"].token_acceptance.remote()), 10)
        except Exception as exc:  # noqa: BLE001 - the stats answer without it
            log.warning("token acceptance unavailable: %s", exc)
            totals["token_speculation"] = {"error": public_reason(exc)}
        return totals

    async def active_sessions(self) -> list[str]:
        return list(self.sessions)

    async def health(self, timeout_s: float = 5.0) -> dict[str, dict]:
        """Per-role readiness: each engine deployment's check_health (vLLM's own check, a one-token
        forward for transformers). A role with no healthy replica times out and reads not ready."""
        async def check(handle) -> dict:
            response = handle.check_health.remote()
            try:
                await asyncio.wait_for(response_result(response), timeout_s)
                return {"ready": True}
            except asyncio.TimeoutError:
                cancel_quietly(response)
                return {"ready": False, "error": f"no healthy replica answered within {timeout_s:g}s"}
            except Exception as exc:  # noqa: BLE001 - the failure is the answer (its kind: /health is open)
                log.warning("health check failed: %s", exc)
                return {"ready": False, "error": public_reason(exc)}

        roles = [(role, h) for role, h in self.handles.items() if h is not None]
        results = await asyncio.gather(*(check(h) for _, h in roles))
        return dict(zip((r for r, _ in roles), results))


def _piece_dict(piece: Piece, rejected_drafts: bool = False) -> dict:
    """A streamed piece of a step; its tokens are counted once, on the step's last piece."""
    d = step_dict(piece.step, rejected_drafts)
    d["text"] = piece.text
    if not piece.last:
        d["tokens"] = 0
    return d
