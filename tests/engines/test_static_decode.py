"""The static-cache decode path (deployments/engines/static_decode.py) against the dynamic loop.

Real SmolLM2-135M on CPU: greedy steps over several rounds of one growing context per row
(different lengths in one batch, prefix KV reused), every stop reason; prompt lookup; seeded
sampling; cancellation. Tiny random-weight models built from the real configs check buckets,
chunking, cache resets and the compiled (fullgraph) step against an independent reference:
argmax of a full forward over the whole context.
"""
from __future__ import annotations

import pytest
import torch

from deployments.config import EngineConfig
from deployments.engines.hf import HFEngine, lookup_proposal
from deployments.engines.rows import StepRow
from deployments.engines.static_decode import StaticDecoder, StopTables
from deployments.model_cache import resolve_model
from orchestrator.types import Prompt, SamplingParams, StepRequest
from tests.support.data import gsm8k


@pytest.fixture(scope="module")
def smol():
    """The dynamic engine and a static decoder over the same weights."""
    engine = HFEngine(EngineConfig(model="smollm2-135m", decode="dynamic"))
    tables = StopTables.from_tokenizer(engine.tokenizer, engine.eos_ids, engine.model.config.vocab_size)
    decoder = StaticDecoder(engine.model, tables, max_rows=4, max_len=1024, buckets=[1, 2, 4], pad_id=engine.pad_id)
    yield engine, decoder
    decoder.close()


def _prompts() -> list[Prompt]:
    rows = gsm8k(2)
    return [Prompt(messages=[{"role": "user", "content": r["question"]}]) for r in rows] + [
        Prompt(text="The capital of France is")]


def test_greedy_steps_equal_the_dynamic_loop_over_several_steps(smol):
    engine, decoder = smol
    prompts = _prompts()
    totals = [400, 70, 400]  # the second row runs into its total budget
    prefixes: list[list] = [[], [], []]
    reasons = set()
    reused_before = decoder.stats["reused_tokens"]
    for _ in range(2):
        reqs = [StepRequest(p, list(pre), SamplingParams(), 48, t) for p, pre, t in zip(prompts, prefixes, totals)]
        dynamic = [engine._row(r) for r in reqs]
        engine._run_rows(dynamic)
        static = [engine._row(r) for r in reqs]
        decoder.run(static)
        for d, s in zip(dynamic, static):
            assert s.out == d.out
            assert (s.reason or "budget") == (d.reason or "budget")
        reasons |= {d.reason for d in dynamic}
        prefixes = [pre + [engine._step(d)] for pre, d in zip(prefixes, dynamic)]
    # every way a step ends was exercised, and later rounds reused the earlier rounds' KV
    assert reasons == {"delimiter", "eos", "budget", "step_limit"}
    assert decoder.stats["reused_tokens"] - reused_before > 150


@pytest.mark.slow
def test_qwen_greedy_steps_equal_the_dynamic_loop():
    """The same on Qwen2.5-0.5B: another tokenizer (tokens such as ".\n\n" end steps), a chat
    template, grouped-query attention with 14 query heads per 2 key/value heads."""
    engine = HFEngine(EngineConfig(model="qwen2.5-0.5b", decode="dynamic"))
    tables = StopTables.from_tokenizer(engine.tokenizer, engine.eos_ids, engine.model.config.vocab_size)
    decoder = StaticDecoder(engine.model, tables, max_rows=2, max_len=1024, buckets=[2], pad_id=engine.pad_id)
    try:
        prompts = _prompts()[:2]
        prefixes: list[list] = [[], []]
        reasons = set()
        for _ in range(2):
            reqs = [StepRequest(p, list(pre), SamplingParams(), 32, t) for p, pre, t in zip(prompts, prefixes, (400, 50))]
            dynamic = [engine._row(r) for r in reqs]
            engine._run_rows(dynamic)
            static = [engine._row(r) for r in reqs]
            decoder.run(static)
            assert [s.out for s in static] == [d.out for d in dynamic]
            assert [s.reason for s in static] == [d.reason for d in dynamic]
            reasons |= {d.reason for d in dynamic}
            prefixes = [pre + [engine._step(d)] for pre, d in zip(prefixes, dynamic)]
        assert "delimiter" in reasons and decoder.stats["reused_tokens"] > 0
    finally:
        decoder.close()


def test_prompt_lookup_equals_the_dynamic_lookup(smol):
    engine, decoder = smol
    prompt = Prompt(text="Count: 1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2, 3,")
    req = StepRequest(prompt, [], SamplingParams(), 40, 200)
    dynamic, static = engine._row(req), engine._row(req)
    dyn_stats = dict.fromkeys(("spec_steps", "draft_tokens", "accepted_tokens"), 0)
    saved = dict(engine.spec_stats)
    engine._decode_lookup(dynamic)
    for k in dyn_stats:
        dyn_stats[k] = engine.spec_stats[k] - saved[k]
    st_stats = dict.fromkeys(dyn_stats, 0)
    decoder.run_lookup(static, engine.num_speculative_tokens, lookup_proposal, st_stats)
    assert static.out == dynamic.out and static.reason == dynamic.reason
    assert st_stats == dyn_stats  # the same proposals, judged by the same argmax
    assert st_stats["accepted_tokens"] > 0
    # the same row decoded plainly by the static loop: prompt lookup changes no token
    plain = engine._row(req)
    decoder.run([plain])
    assert plain.out == static.out


def test_seeded_sampling_is_reproducible_and_greedy_rows_unaffected(smol):
    engine, decoder = smol
    prompts = _prompts()

    def rows(seeds):
        out = [engine._row(StepRequest(prompts[0], [], SamplingParams(temperature=1.0, top_p=0.95, top_k=50, seed=s),
                                       24, 400)) for s in seeds]
        return out + [engine._row(StepRequest(prompts[1], [], SamplingParams(), 24, 400))]

    a, b, c = rows([1, 2]), rows([1, 2]), rows([3, 4])
    for batch in (a, b, c):
        decoder.run(batch)
    assert [r.out for r in a] == [r.out for r in b]
    assert a[0].out != a[1].out  # sibling seeds give distinct drafts
    assert a[0].out != c[0].out or a[1].out != c[1].out
    greedy = engine._row(StepRequest(prompts[1], [], SamplingParams(), 24, 400))
    engine._run_rows([greedy])
    assert a[2].out == greedy.out


class _CancelAfter:
    """An Event stand-in that reports cancellation from its n-th check on (deterministic)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.checks = 0

    def is_set(self) -> bool:
        self.checks += 1
        return self.checks > self.n

    def set(self) -> None:
        self.n = 0


def test_cancellation_stops_only_that_row(smol):
    engine, decoder = smol
    prompts = _prompts()
    req = [StepRequest(p, [], SamplingParams(), 40, 400) for p in (prompts[1], prompts[0])]
    full = [engine._row(r) for r in req]
    decoder.run(full)
    assert len(full[0].out) > 12

    early = [engine._row(r) for r in req]
    early[0].cancelled.set()  # cancelled before it starts: no token, as in the dynamic loop
    decoder.run(early)
    assert early[0].out == [] and early[0].reason == "step_limit"
    assert early[1].out == full[1].out and early[1].reason == full[1].reason

    mid = [engine._row(r) for r in req]
    mid[0].cancelled = _CancelAfter(3)  # noticed at a check a few tokens in
    decoder.run(mid)
    assert 0 < len(mid[0].out) < len(full[0].out) and mid[0].reason == "step_limit"
    assert full[0].out[:len(mid[0].out)] == mid[0].out
    assert mid[1].out == full[1].out


# -- tiny random-weight models from the real configs ---------------------------------------------
def _tiny(name: str, seed: int = 0):
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(resolve_model(name))
    cfg.update({"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 1024, "tie_word_embeddings": False,
                "pad_token_id": 0})
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, attn_implementation="sdpa").eval()


@torch.inference_mode()
def _reference(model, ids: list[int], n: int) -> list[int]:
    """Greedy tokens by full forwards over the whole context: no cache, no padding."""
    ctx = list(ids)
    for _ in range(n):
        ctx.append(int(model(input_ids=torch.tensor([ctx])).logits[0, -1].argmax()))
    return ctx[len(ids):]


def _forced(ids: list[int], n: int) -> StepRow:
    return StepRow(list(ids), SamplingParams(), n, budget_cut=False)


def test_buckets_chunks_reuse_and_resets_match_the_reference():
    model = _tiny("smollm2-135m")
    # StopTables.none: every row runs to its limit (the replay benchmark's mode)
    decoder = StaticDecoder(model, StopTables.none(1024), max_rows=4, max_len=96, buckets=[2, 4])
    try:
        gen = torch.Generator().manual_seed(1)
        contexts = [torch.randint(3, 1000, (n,), generator=gen).tolist() for n in (5, 17, 9, 30, 12)]
        limits = [6, 11, 3, 8, 10]
        for _ in range(4):  # five rows: a chunk of 4 and one padded into bucket 2; contexts grow each round
            rows = [_forced(c, n) for c, n in zip(contexts, limits)]
            decoder.run(rows)
            for c, n, r in zip(contexts, limits, rows):
                assert r.out == _reference(model, c, n)
                assert r.reason == "step_limit"
            contexts = [c + r.out for c, r in zip(contexts, rows)]
        assert decoder.stats["reused_tokens"] > 0
        assert decoder.stats["resets"] > 0  # 96 columns run out: everything prefilled again, same tokens
    finally:
        decoder.close()


def test_budget_cut_and_limit_zero_rows():
    model = _tiny("smollm2-135m", seed=2)
    decoder = StaticDecoder(model, StopTables.none(1024), max_rows=2, max_len=64)
    try:
        rows = [StepRow([5, 6, 7], SamplingParams(), 4, budget_cut=True), StepRow([8, 9], SamplingParams(), 0, True)]
        decoder.run(rows)
        assert rows[0].reason == "budget" and len(rows[0].out) == 4
        assert rows[1].reason == "budget" and rows[1].out == []
        assert decoder.takes(_forced([1] * 40, 20)) and not decoder.takes(_forced([1] * 40, 30))
    finally:
        decoder.close()


def test_compiled_fullgraph_step_matches_eager():
    """torch.compile(fullgraph=True) must trace the whole step (on CUDA the same call records
    CUDA graphs); on CPU it runs as compiled code, and its tokens equal the reference's."""
    model = _tiny("qwen2.5-0.5b", seed=3)
    decoder = StaticDecoder(model, StopTables.none(1024), max_rows=2, max_len=64, buckets=[2], capture="compile")
    try:
        seconds = decoder.warmup()
        assert set(seconds) == {"decode b=2"}
        contexts = [[11, 12, 13, 14, 15], [21, 22]]
        rows = [_forced(c, 7) for c in contexts]
        decoder.run(rows)
        assert [r.out for r in rows] == [_reference(model, c, 7) for c in contexts]
    finally:
        decoder.close()


def test_stop_tables_follow_the_tokenizer(smol):
    engine, _ = smol
    tok = engine.tokenizer
    tables = StopTables.from_tokenizer(tok, engine.eos_ids, engine.model.config.vocab_size)
    flags = tables.flags.tolist()
    nl, dnl, word = (tok.encode(t, add_special_tokens=False) for t in ("\n", "\n\n", " apple"))
    assert len(nl) == 1 and len(dnl) == 1 and len(word) == 1
    assert flags[nl[0]] & 4 and flags[nl[0]] & 8 and not flags[nl[0]] & 2  # starts and ends with "\n"
    assert flags[dnl[0]] & 2  # contains "\n\n"
    assert flags[word[0]] == 0
    assert all(flags[e] & 1 for e in engine.eos_ids)



def test_static_engines_keep_lr_lossless_in_both_schedules(smol):
    """HFEngine(decode="static") end to end: a bf16 SmolLM2 drafting for an fp32 SmolLM2 (shared
    tokenizer, real mismatches from the bf16 rounding), greedy + exact verifier: lr output equals
    the dynamic engine's ar output token for token, sync and async (async cancels branches)."""
    import asyncio

    from orchestrator.lookahead import LookaheadParams, generate
    from verifier.exact import ExactVerifier

    dynamic, _ = smol
    kwargs = {"max_batch": 4, "static_max_len": 1024}
    target = HFEngine(EngineConfig(model="smollm2-135m", decode="static", engine_kwargs=kwargs))
    draft = HFEngine(EngineConfig(model="smollm2-135m", decode="static", dtype="bfloat16", engine_kwargs=kwargs))
    assert target._static is not None and draft._static is not None
    prompts = [Prompt(messages=[{"role": "user", "content": r["question"]}]) for r in gsm8k(2)]

    async def run():
        out = []
        for p in prompts:
            ar = await generate(dynamic, p, LookaheadParams(mode="ar", max_tokens=48))
            for schedule in ("sync", "async"):
                lr = await generate(target, p, LookaheadParams(mode="lr", depth=3, schedule=schedule, max_tokens=48),
                                    draft, ExactVerifier())
                out.append((ar, lr))
        return out

    try:
        results = asyncio.run(run())
    finally:
        target.close()
        draft.close()
    for ar, lr in results:
        assert [t for s in lr.steps for t in s.token_ids] == [t for s in ar.steps for t in s.token_ids]
    assert sum(lr.stats.accepted_steps for _, lr in results) > 0
    assert target._static.stats["reused_tokens"] > 0
