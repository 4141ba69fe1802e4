"""Hugging Face transformers step engine: the light engine for CPU, tests and odd models.

A hand-written decode loop (KV cache, left padding) instead of `model.generate`, because
steps need per-row stop rules (delimiter, EOS, step and total budgets), per-row seeds so
sibling drafts are distinct but reproducible, and per-row cancellation of dropped branches.
Concurrent `generate_steps` calls are micro-batched into one forward loop.
"""
from __future__ import annotations

import asyncio
import threading

import torch

from deployments.config import EngineConfig
from deployments.engines.microbatch import MicroBatcher
from deployments.engines.prefix_kv import PrefixKV, opening_of
from deployments.engines.prompt_lookup import lookup_proposal
from deployments.engines.protocol import Engine, EngineUnhealthy
from deployments.engines.rows import StepRow, answer_stops, cut_reason, hold_stops, step_limit
from deployments.engines.static_decode import STATIC_KWARGS, engine_decoder
from deployments.engines.tokens import PromptRenderer, context_ids, eos_token_ids, tokenizer_key
from orchestrator.types import DELIMITER, Prompt, SamplingParams, Step, StepRequest


HF_ENGINE_KWARGS = frozenset({"max_batch", "suppress_tokens"}) | STATIC_KWARGS


def pick_device(device: str) -> str:
    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(dtype: str, device: str) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


class HFEngine(Engine):
    """StepEngine and ChoiceScorer over a transformers causal LM.

    `cfg.engine_kwargs` may set `max_batch` (rows per forward loop, default 16), `suppress_tokens`
    (Engine) and the static decoder's options; anything else is refused, so a vLLM-only option
    never passes silently.
    """

    def __init__(self, cfg: EngineConfig) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from deployments.model_cache import resolve_model

        super().__init__(cfg)
        unknown = sorted(set(cfg.engine_kwargs) - HF_ENGINE_KWARGS)
        if unknown:
            raise ValueError(f"engine_kwargs not understood by the hf engine: {unknown} "
                             f"(it accepts {sorted(HF_ENGINE_KWARGS)})")
        if cfg.token_speculation not in ("none", "ngram"):
            raise ValueError(f"hf engine supports token_speculation 'none' or 'ngram' (prompt lookup), "
                             f"not {cfg.token_speculation!r}; use the vllm engine for draft_model/eagle")
        path = resolve_model(cfg.model)
        self.device = pick_device(cfg.device)
        if self.device == "cpu" and cfg.cpu_threads:
            # Ray pins OMP_NUM_THREADS to an actor's num_cpus (at least 1). Raise it only on request:
            # several engine replicas each spinning OpenMP threads on the same few cores slow all of them.
            torch.set_num_threads(cfg.cpu_threads)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=pick_dtype(cfg.dtype, self.device))
        self.model.to(self.device).eval()
        self.batch_invariant = cfg.batch_invariant
        self.token_speculation = cfg.token_speculation
        self.num_speculative_tokens = cfg.num_speculative_tokens
        self.spec_stats = {"spec_steps": 0, "draft_tokens": 0, "accepted_tokens": 0}  # prompt lookup
        self.max_batch = int(cfg.engine_kwargs.get("max_batch", 16))
        self.tokenizer_key = cfg.tokenizer_key or tokenizer_key(self.tokenizer)
        self.renderer = PromptRenderer(self.tokenizer)
        self.eos_ids = eos_token_ids(self.tokenizer, self.model.generation_config)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self.eos_ids)
        # fixed-shape decoding, captured per batch bucket (static_decode.py); rows it does not take
        # (logit shaping, too long for its cache) fall back to the loops below
        static = cfg.decode == "static" or (cfg.decode == "auto" and self.device.startswith("cuda"))
        self._static = engine_decoder(self.model, self.tokenizer, self.eos_ids, self.pad_id, self.max_batch,
                                      cfg.engine_kwargs) if static else None
        self._lock = threading.Lock()  # one forward loop at a time on this model
        self._prefix_kv = PrefixKV(self.model, self.device)  # judge/rater openings, computed once
        self._batcher = MicroBatcher(self._run_rows, self.max_batch)
        self._closed = False
        self._live: list[StepRow] = []  # rows submitted and not yet finished (num_unfinished_requests)

    @property
    def max_context(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 0) or 32768)

    def prompt_tokens(self, prompt: Prompt) -> int:
        return len(self.renderer.ids(prompt))

    def token_acceptance(self) -> dict:
        return dict(self.spec_stats)

    async def check_health(self) -> None:
        if self._closed:
            raise EngineUnhealthy(f"{self.name}: engine is shut down")
        if self._batcher.failure() is not None:
            raise EngineUnhealthy(f"{self.name}: batch worker died: {self._batcher.failure()!r}")
        await asyncio.to_thread(self._probe)

    def _probe(self) -> None:
        """A one-token forward, unless a decode loop holds the model (then it is evidently working)."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            with torch.inference_mode():
                ids = torch.tensor([[self.pad_id]], device=self.device)
                logits = self.model(input_ids=ids).logits
            if not torch.isfinite(logits).all():
                raise EngineUnhealthy(f"{self.name}: forward produced non-finite logits")
        finally:
            self._lock.release()

    def close(self) -> None:
        # The batch worker belongs to its event loop; once closed it gets no more work.
        self._closed = True
        if self._static is not None:
            self._static.close()

    # -- StepEngine --------------------------------------------------------------------
    async def generate_steps(self, requests: list[StepRequest]) -> list[Step]:
        rows = [self._row(r) for r in requests]
        self._live = [r for r in self._live if not r.reason and not r.cancelled.is_set()] + rows
        await self._batcher.submit(rows)  # concurrent calls share one forward loop
        return [self._step(row) for row in rows]

    async def num_unfinished_requests(self) -> int:
        # A cancelled row stops at its next token, so it no longer counts as held work.
        self._live = [r for r in self._live if not r.reason and not r.cancelled.is_set()]
        return len(self._live)

    def _row(self, req: StepRequest) -> StepRow:
        prompt_ids = self.renderer.ids(req.prompt)
        ids = context_ids(prompt_ids, req.prefix, self.tokenizer_key, self.renderer.encode)
        generated = len(ids) - len(prompt_ids)
        limit, budget_cut = step_limit(req.max_step_tokens, req.max_total_tokens - generated)
        sampling = self.sampling_for(req.sampling)
        stops = answer_stops(sampling, self.eos_ids)
        sampling, limit, budget_cut = hold_stops(sampling, stops, generated, limit, budget_cut)
        return StepRow(ids, sampling, limit, budget_cut, stops=stops)

    def _step(self, row: StepRow) -> Step:
        text = self.tokenizer.decode(row.out, skip_special_tokens=row.sampling.skip_special_tokens)
        return Step(text, list(row.out), self.tokenizer_key, row.reason or "budget")

    def _run_rows(self, rows: list[StepRow]) -> None:
        with self._lock:
            todo = [r for r in rows if r.limit > 0 and not r.cancelled.is_set()]
            for r in rows:
                if r.limit <= 0:
                    r.reason = "budget"
            if self.token_speculation == "ngram":  # prompt lookup verifies per row: greedy rows go alone
                lookup = [r for r in todo if r.sampling.greedy and not r.sampling.shapes_logits]
                for r in lookup:  # (it verifies with the raw argmax: biased or penalised rows decode plainly)
                    if self._static is not None and self._static.takes(r, self.num_speculative_tokens):
                        self._static.run_lookup(r, self.num_speculative_tokens, lookup_proposal, self.spec_stats)
                    else:
                        self._decode_lookup(r)
                todo = [r for r in todo if r not in lookup]
            size = 1 if self.batch_invariant else self.max_batch
            if self._static is not None:
                fixed = [r for r in todo if self._static.takes(r)]
                for i in range(0, len(fixed), size):
                    self._static.run(fixed[i:i + size])
                todo = [r for r in todo if all(r is not f for f in fixed)]
            for i in range(0, len(todo), size):
                self._decode(todo[i:i + size])

    # -- the decode loop -----------------------------------------------------------------
    @torch.inference_mode()
    def _decode(self, rows: list[StepRow]) -> None:
        width = max(len(r.ids) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):  # left padding keeps every row's last token at the end
            ids[i, width - len(r.ids):] = torch.tensor(r.ids)
            mask[i, width - len(r.ids):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        # logits_to_keep=1: the vocabulary projection for the last position only, not the whole prompt
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
        past, logits = out.past_key_values, out.logits[:, -1, :]
        generators = [_generator(r.sampling, self.device) for r in rows]
        active = [True] * len(rows)
        next_pos = positions[:, -1:] + 1
        for _ in range(max(r.limit for r in rows)):
            tokens = [_choose(logits[i], rows[i].sampling, generators[i], rows[i]) if active[i] else self.pad_id
                      for i in range(len(rows))]
            for i, r in enumerate(rows):
                if active[i]:
                    active[i] = self._advance(r, tokens[i])
            if not any(active):
                break
            step_ids = torch.tensor(tokens, device=self.device).unsqueeze(1)
            mask = torch.cat([mask, torch.ones_like(step_ids)], dim=1)
            out = self.model(input_ids=step_ids, attention_mask=mask, position_ids=next_pos,
                             past_key_values=past, use_cache=True)
            past, logits, next_pos = out.past_key_values, out.logits[:, -1, :], next_pos + 1

    @torch.inference_mode()
    def _decode_lookup(self, row: StepRow) -> None:
        """Greedy decoding with prompt-lookup token speculation (token-level SD inside a step).

        Proposals are copied from the context after the latest match of its last n-gram and
        verified in one forward; the output equals plain greedy decoding.
        """
        out = self.model(input_ids=torch.tensor([row.ids], device=self.device), use_cache=True, logits_to_keep=1)
        past, logits = out.past_key_values, out.logits[0, -1:, :]
        context = list(row.ids)
        while True:
            token = int(torch.argmax(logits[0]))
            if not self._advance(row, token):
                return
            context.append(token)
            proposal = lookup_proposal(context, min(self.num_speculative_tokens, row.limit - len(row.out)))
            if proposal:
                self.spec_stats["spec_steps"] += 1
                self.spec_stats["draft_tokens"] += len(proposal)
            feed = torch.tensor([[token] + proposal], device=self.device)
            out = self.model(input_ids=feed, past_key_values=past, use_cache=True)
            past, verify = out.past_key_values, out.logits[0]
            accepted = 0
            for j, proposed in enumerate(proposal):
                if int(torch.argmax(verify[j])) != proposed:
                    break
                if not self._advance(row, proposed):
                    return
                context.append(proposed)
                accepted += 1
                self.spec_stats["accepted_tokens"] += 1
            past.crop(len(context))  # drop the rejected proposals' keys and values
            logits = verify[accepted:accepted + 1]

    def _advance(self, row: StepRow, token: int) -> bool:
        """Append a token; return False when the row's step is over."""
        if row.cancelled.is_set():
            row.reason = "step_limit"
            return False
        if token in (self.eos_ids if row.stops is None else row.stops):
            row.reason = "eos"  # EOS ends the answer; it is not part of the step's text
            if row.sampling.include_stop_str_in_output and token not in self.eos_ids:
                row.out.append(token)  # a request's stop token, asked to be kept
            return False
        row.out.append(token)
        piece = self.tokenizer.decode([token])
        if "\n" in piece and DELIMITER in self.tokenizer.decode(row.out):
            row.reason = "delimiter"  # the whole token stays: steps concatenate to the AR ids
            return False
        if len(row.out) >= row.limit:
            row.reason = cut_reason(row.budget_cut)
            return False
        return True

    # -- ChoiceScorer --------------------------------------------------------------------
    async def choice_probs(self, prompts: list[Prompt], choices: list[str]) -> list[list[float]]:
        first = [self.renderer.encode(c)[0] for c in choices]
        return await asyncio.to_thread(self._choice_probs, prompts, first)

    @torch.inference_mode()
    def _choice_probs(self, prompts: list[Prompt], first: list[int]) -> list[list[float]]:
        result = []
        with self._lock:
            for p in prompts:  # one by one: judge prompts differ a lot in length; their shared opening once
                ids = self.renderer.ids(p)
                logits = self._prefix_kv.last_logits(ids, self._opening_len(p, ids)).float()
                result.append(torch.softmax(logits, -1)[first].tolist())  # raw: see Engine.choice_probs
        return result

    def _opening_len(self, prompt: Prompt, ids: list[int]) -> int:
        """Tokens of the prompt's opening (prefix_kv.opening_of), 0 where its rendering is not a prefix."""
        opening = opening_of(prompt)
        if opening is None:
            return 0
        head = self.renderer.ids(opening)
        return len(head) if ids[:len(head)] == head else 0


def _generator(sampling: SamplingParams, device: str) -> torch.Generator | None:
    if sampling.greedy:
        return None
    g = torch.Generator(device=device)
    g.manual_seed(sampling.seed if sampling.seed is not None else torch.seed() & 0x7FFFFFFF)
    return g


def _choose(logits: torch.Tensor, s: SamplingParams, gen: torch.Generator | None, row: StepRow | None = None) -> int:
    """The next token, in vLLM's order: logit bias, repetition penalty, then greedy; or
    temperature, min_p, top_k, top_p and a draw."""
    if s.shapes_logits:
        logits = logits.float().clone()
        if s.logit_bias:
            ids, bias = zip(*s.logit_bias)
            logits[list(ids)] += torch.tensor(bias, device=logits.device)
        if s.repetition_penalty != 1.0 and row is not None:
            # every token of the prompt and the answer so far (HF/vLLM repetition penalty)
            seen = torch.tensor(sorted(set(row.ids) | set(row.out)), device=logits.device)
            scores = logits[seen]
            logits[seen] = torch.where(scores > 0, scores / s.repetition_penalty, scores * s.repetition_penalty)
    if s.greedy:
        return int(torch.argmax(logits))
    logits = logits.float() / s.temperature
    if s.min_p > 0.0:
        probs = torch.softmax(logits, -1)
        logits = logits.masked_fill(probs < s.min_p * probs.max(), float("-inf"))
    if s.top_k > 0:
        kth = torch.topk(logits, min(s.top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, -1)
    if s.top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        drop = sorted_p.cumsum(-1) - sorted_p > s.top_p  # keep the smallest set reaching top_p
        sorted_p[drop] = 0.0
        probs = torch.zeros_like(probs).scatter(0, order, sorted_p)
    return int(torch.multinomial(probs, 1, generator=gen))
