"""Static-cache step decoding for the transformers engine (gpt-fast style).

Why: eager transformers decoding on a GPU is launch-bound (hundreds of small kernels per token,
each launched from Python), so a 0.5B draft decodes barely faster than a 14B target and step
speculation cannot pay. Here the per-token work is one function over fixed-shape tensors: a KV
cache preallocated for `max_rows` rows x `max_len` slots, the current tokens and per-row
counters. It can be captured once per batch bucket (an explicit CUDA graph, or
torch.compile(mode="reduce-overhead", fullgraph=True)) and replayed per token, with no Python
work per row and no host sync per token.

Step semantics are those of HFEngine's dynamic loop (deployments/engines/hf.py), decided on the
device from token-id tables:
- EOS ends the answer and is not part of the step;
- a step ends on the token that makes the step text contain the delimiter "\\n\\n", and that
  token is kept whole. Decoded text is the concatenation of the token pieces for byte-level
  tokenizers (Qwen, SmolLM2, Llama 3), so that token either contains "\\n\\n" itself or starts
  with "\\n" right after a token of this step that ended with "\\n" (only this step's tokens
  count, as in the dynamic loop);
- the row's token limit ends the step, as "budget" when the limit came from the total token
  budget and "step_limit" otherwise; a cancelled row stops as "step_limit".
Greedy rows pick the argmax, exactly like the dynamic loop. Sampled rows use Gumbel-max
sampling with a counter-based hash of (row seed, position, token id) instead of a
torch.Generator, so they are reproducible per seed inside a captured graph; their draws
differ from the dynamic loop's.

KV layout and prefix reuse: all rows share one column pointer `end`; a call writes its new
context tokens into a block of columns [end, end + E) (right-aligned per row) and its decoded
tokens after it. Attention masks by a per-row `valid` bitmap, so a row may have holes.
Each cache row remembers its tokens; a new request row reuses the longest common prefix of
any cache row (copying that row's KV when it sits elsewhere), so a session's context is
prefilled once and only its new steps are prefilled on later calls. When the columns run
out the cache is reset and everything is prefilled again.

Host checks (all rows done? cancelled?) happen every `check_every` tokens; on CUDA they read
a flag copied asynchronously, lagging `check_every` tokens behind the queued work, so the
device never waits for the host.

The parts: attention over the static cache (static_attention.py), the step-end token tables
(step_tables.py), the device state and the captured per-token step (static_step.py), prompt
lookup on the cache (static_lookup.py); here, the decoder: chunks, prefill with prefix reuse,
the host loop and the capture.
"""
from __future__ import annotations

import concurrent.futures
import time
from typing import Callable, Sequence

import torch

from deployments.engines.rows import cut_reason
from deployments.engines.static_attention import install_static_attention
from deployments.engines.static_lookup import Verify, run_lookup, verify_for
from deployments.engines.static_step import Bucket, Cache, advance, choose, decode_step
from deployments.engines.step_tables import DELIMITER, EOS, LIMIT, RUNNING, StopTables


def _lcp(a: list[int], b: list[int]) -> int:
    """Length of the common prefix, by binary search over C-speed slice comparisons."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo



# -- the decoder ------------------------------------------------------------------------------
class StaticDecoder:
    """Decodes rows (deployments.engines.rows.StepRow) on a
    static cache. `capture`: "none" (eager), "graph" (explicit CUDA graphs, CUDA only) or
    "compile" (torch.compile, fullgraph; reduce-overhead CUDA graphs on CUDA)."""

    def __init__(self, model, tables: StopTables, *, max_rows: int = 8, max_len: int = 2048,
                 buckets: Sequence[int] | None = None, capture: str = "none", check_every: int = 2,
                 pad_id: int = 0) -> None:
        if capture not in ("none", "graph", "compile"):
            raise ValueError(f"capture must be none, graph or compile, not {capture!r}")
        self.model = model
        self.device = next(model.parameters()).device
        if capture == "graph" and self.device.type != "cuda":
            raise ValueError("capture='graph' needs a CUDA device")
        install_static_attention(model)
        self.tables = tables.to(self.device)
        self.buckets = sorted(set(buckets or range(1, max_rows + 1)))
        if self.buckets[0] < 1 or self.buckets[-1] > max_rows:
            raise ValueError(f"buckets must lie in 1..{max_rows}")
        self.max_rows, self.max_len = max_rows, max_len
        self.capture, self.check_every, self.pad_id = capture, max(1, check_every), pad_id
        self.host_rule_tables = tables
        dtype = next(model.parameters()).dtype
        self.cache = Cache(model.config, max_rows, max_len, dtype, self.device)
        self._buckets: dict[int, Bucket] = {}
        self._lookup: dict[int, Verify] = {}
        self._pool = None
        self.capture_s: dict[str, float] = {}  # what capturing/compiling each shape took
        self.stats = {"calls": 0, "prefill_tokens": 0, "reused_tokens": 0, "decode_steps": 0, "resets": 0}
        # One thread runs every forward: CUDA graphs and torch.compile's graph trees are per thread.
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="static-decode")
        if capture == "compile":
            import torch._dynamo.config as dc

            for name in ("cache_size_limit", "recompile_limit"):  # one entry per bucket and variant
                if hasattr(dc, name):
                    setattr(dc, name, max(getattr(dc, name), 64))

    # -- public -----------------------------------------------------------------------------
    def takes(self, row, lookup_k: int = 0) -> bool:
        """Whether this path decodes the row exactly as hf's loop would: no logit shaping it does not
        implement (bias, repetition penalty, min_p, a request's own stop tokens: its tables stop on
        EOS), and room in the cache (the last column is scratch; prompt lookup needs one verify
        block more)."""
        s = row.sampling
        if getattr(s, "shapes_logits", False) or getattr(s, "min_p", 0.0) > 0.0 or getattr(s, "own_stops", False):
            return False
        return len(row.ids) + row.limit + lookup_k + 2 < self.max_len

    def run(self, rows) -> None:
        """Decode every row's step (rows this decoder `takes`), in chunks of the largest bucket."""
        todo = [r for r in rows if r.limit > 0]
        for r in rows:
            if r.limit <= 0:
                r.reason = "budget"
        size = self.buckets[-1]
        for i in range(0, len(todo), size):
            chunk = todo[i:i + size]
            # rows fit one by one; together the longest context plus the longest step may not
            if max(len(r.ids) for r in chunk) + max(r.limit for r in chunk) + 2 >= self.max_len:
                for r in chunk:
                    self._thread.submit(self._run_chunk, [r]).result()
            else:
                self._thread.submit(self._run_chunk, chunk).result()

    def run_lookup(self, row, k: int, propose: Callable[[list[int], int], list[int]],
                   stats: dict | None = None) -> None:
        """Greedy decoding of one row with prompt-lookup proposals of up to k tokens verified in
        one fixed-shape [1, k+1] forward (token-level speculation inside the step). `stats`, when
        given, counts spec_steps, draft_tokens and accepted_tokens as hf's loop does."""
        self._thread.submit(run_lookup, self, row, k, propose, stats).result()

    def warmup(self, buckets: Sequence[int] | None = None, sample: bool = False, lookup_k: Sequence[int] = ()) -> dict:
        """Capture/compile the decode step for these buckets (and verify shapes) now, not at first use."""
        return self._thread.submit(self._warmup, list(buckets or self.buckets), sample, list(lookup_k)).result()

    def reset(self) -> None:
        """Forget every cached row (after any work in flight)."""
        self._thread.submit(self.cache.reset).result()

    def close(self) -> None:
        self._thread.shutdown(wait=True)

    # -- one chunk --------------------------------------------------------------------------
    def _bucket_for(self, n: int) -> Bucket:
        b = next(x for x in self.buckets if x >= n)
        if b not in self._buckets:
            self._buckets[b] = Bucket(self.cache, b, self.tables, self.device)
        return self._buckets[b]

    @torch.inference_mode()
    def _run_chunk(self, rows) -> None:
        s = self._bucket_for(len(rows))
        n, b = len(rows), s.b
        need = max(r.limit for r in rows)
        sample = any(not r.sampling.greedy for r in rows)
        step = self._step_fn(s, sample)
        logits = self._prefill([r.ids for r in rows], b, need)
        # per-call state
        dev = self.device
        pad = b - n
        s.pos.copy_(torch.tensor([len(r.ids) for r in rows] + [0] * pad, device=dev))
        s.slot.fill_(self.cache.end)
        s.col.zero_()
        s.done.copy_(torch.tensor([False] * n + [True] * pad, device=dev))
        s.prev_nl.zero_()
        s.n_out.zero_()
        s.reason.zero_()
        s.all_done.zero_()
        s.limit.copy_(torch.tensor([r.limit for r in rows] + [1] * pad, device=dev))
        s.greedy.copy_(torch.tensor([r.sampling.greedy for r in rows] + [True] * pad, device=dev))
        s.temp.copy_(torch.tensor([max(r.sampling.temperature, 1e-6) for r in rows] + [1.0] * pad, device=dev))
        s.top_k.copy_(torch.tensor([r.sampling.top_k for r in rows] + [0] * pad, device=dev))
        s.top_p.copy_(torch.tensor([r.sampling.top_p for r in rows] + [1.0] * pad, device=dev))
        s.seed.copy_(torch.tensor([_seed(r.sampling) for r in rows] + [0] * pad, device=dev))
        self._apply_cancellations(s, rows)  # a row cancelled already gets no token, as in hf's loop
        advance(s, choose(logits, s, sample))  # the first token, from the prefill's logits
        start = self.cache.end
        steps = self._loop(s, step, need - 1, rows)
        out, n_out, reason = (t.cpu() for t in (s.out[:, :steps + 1], s.n_out, s.reason))
        self._finish_rows(rows, out, n_out, reason)
        # Only kept tokens that were fed keep their KV; the rest (EOS, tokens after a row's end,
        # padding rows) is masked out so the next call can reuse the rows.
        if steps:
            fed = (torch.arange(steps, device=dev)[None, :] < s.n_out[:, None])
            s.valid[:, start:start + steps] &= fed
        for i, r in enumerate(rows):
            m = min(int(n_out[i]), steps)
            self.cache.tokens[i] += r.out[:m]
            self.cache.slots[i] += range(start, start + m)
        self.cache.end = start + steps
        self.stats["calls"] += 1
        self.stats["decode_steps"] += steps

    def _loop(self, s: Bucket, step: Callable[[], None], budget: int, rows) -> int:
        """Run up to `budget` decode steps; stop when every row is done or cancelled. Returns the
        number of steps run. The all-done flag is read `check_every` steps late on CUDA (copied
        asynchronously into pinned memory) so the device always has queued work."""
        cuda = self.device.type == "cuda"
        lag = self.check_every
        if cuda:
            flags = torch.zeros(lag + 1, dtype=torch.bool, pin_memory=True)
            events = [torch.cuda.Event() for _ in range(lag + 1)]
        steps = 0
        while steps < budget:
            if cuda:
                if steps >= lag:  # the flag written after step (steps - lag)
                    events[(steps - lag) % (lag + 1)].synchronize()
                    if bool(flags[(steps - lag) % (lag + 1)]):
                        break
                elif steps == 0 and bool(s.all_done):
                    break
            elif steps % lag == 0 and bool(s.all_done):
                break
            if steps % lag == 0:
                self._apply_cancellations(s, rows)
            step()
            steps += 1
            if cuda:
                flags[steps % (lag + 1)].copy_(s.all_done[0], non_blocking=True)
                events[steps % (lag + 1)].record()
        return steps

    @staticmethod
    def _apply_cancellations(s: Bucket, rows) -> None:
        stop = [i for i, r in enumerate(rows) if r.cancelled.is_set()]
        if stop:
            idx = torch.tensor(stop, device=s.done.device)
            s.done.index_fill_(0, idx, True)
            s.all_done.copy_(s.done.all().reshape(1))

    @staticmethod
    def _finish_rows(rows, out, n_out, reason) -> None:
        for i, r in enumerate(rows):
            r.out = out[i, :int(n_out[i])].tolist()
            code = int(reason[i])
            if r.cancelled.is_set() and code == RUNNING:
                r.reason = "step_limit"
            elif code == EOS:
                r.reason = "eos"
            elif code == DELIMITER:
                r.reason = "delimiter"
            elif code == LIMIT:
                r.reason = cut_reason(r.budget_cut)
            else:
                r.reason = "step_limit"

    # -- prefill with prefix reuse -----------------------------------------------------------------
    def _prefill(self, contexts: list[list[int]], b: int, need: int) -> torch.Tensor:
        """Place each context in cache row i (reusing the longest cached prefix), prefill the new
        tokens in one eager forward, and return the last position's logits [b, vocab]."""
        c, dev = self.cache, self.device
        keep, src = [], []
        for ids in contexts:
            best, best_row = 0, -1
            for r in range(c.rows):
                n = _lcp(ids, c.tokens[r])
                if n > best or (n == best and n > 0 and r == len(src)):
                    best, best_row = n, r
            keep.append(min(best, len(ids) - 1))  # the last token is always fed: its logits start the step
            src.append(best_row if keep[-1] > 0 else -1)
        width = max(len(ids) - k for ids, k in zip(contexts, keep))
        if c.end + width + need + 1 >= c.length:  # out of columns: start over, prefill everything
            c.reset()
            self.stats["resets"] += 1
            keep, src = [0] * len(contexts), [-1] * len(contexts)
            width = max(len(ids) for ids in contexts)
        n = len(contexts)
        perm = [s if s >= 0 else i for i, s in enumerate(src)]
        if perm != list(range(n)):
            idx = torch.tensor(perm, device=dev)
            for kc, vc in c.layers:
                kc[:n, :, :c.end] = kc[:, :, :c.end].index_select(0, idx)
                vc[:n, :, :c.end] = vc[:, :, :c.end].index_select(0, idx)
            c.valid[:n] = c.valid.index_select(0, idx)
            c.tokens[:n] = [list(c.tokens[p]) for p in perm]
            c.slots[:n] = [list(c.slots[p]) for p in perm]
        x = torch.full((b, width), self.pad_id, dtype=torch.long)
        pos = torch.zeros((b, width), dtype=torch.long)
        for i, (ids, k) in enumerate(zip(contexts, keep)):
            if src[i] < 0:
                c.valid[i] = False
                c.tokens[i], c.slots[i] = [], []
            elif len(c.tokens[i]) > k:  # the cached row diverges after k tokens: mask the rest out
                c.valid[i, torch.tensor(c.slots[i][k:], device=dev)] = False
                c.tokens[i], c.slots[i] = c.tokens[i][:k], c.slots[i][:k]
            new = ids[k:]
            first = c.end + width - len(new)
            c.valid[i, first:c.end + width] = True
            c.tokens[i] += new
            c.slots[i] += range(first, c.end + width)
            x[i, width - len(new):] = torch.tensor(new)
            pos[i, width - len(new):] = torch.arange(k, len(ids))
        self.stats["prefill_tokens"] += sum(len(ids) - k for ids, k in zip(contexts, keep))
        self.stats["reused_tokens"] += sum(keep)
        s = self._bucket_for(b)
        slots = torch.arange(c.end, c.end + width, device=dev)
        ar = s.arange_len
        # causal over valid slots; a padding query sees itself, so no attention row is empty
        mask = (s.valid[:, None, :] & (ar[None, None, :] <= slots[None, :, None])) | (ar[None, :] == slots[:, None])[None]
        logits = self.model(input_ids=x.to(dev), position_ids=pos.to(dev), attention_mask=mask[:, None],
                            use_cache=False, lookahead_kv=s.layers, lookahead_slots=slots, logits_to_keep=1).logits[:, -1, :]
        c.end += width
        return logits

    # -- capture ---------------------------------------------------------------------------------
    def _step_fn(self, s: Bucket, sample: bool) -> Callable[[], None]:
        if sample not in s.graphs:
            s.graphs[sample] = self._make_step(s, sample)
        return s.graphs[sample]

    def _make_step(self, s: Bucket, sample: bool) -> Callable[[], None]:
        model = self.model
        fn = lambda: decode_step(model, s, sample)  # noqa: E731
        t0 = time.perf_counter()
        if self.capture == "graph":
            fn = self._cuda_graph(fn, self._prime_decode(s))
        elif self.capture == "compile":
            fn = self._compiled(fn, s.tensors(), self._prime_decode(s))
        self.capture_s[f"decode b={s.b}{' sample' if sample else ''}"] = round(time.perf_counter() - t0, 3)
        return fn

    def _compiled(self, fn, tensors: list[torch.Tensor], prime: Callable[[Callable[[], None]], None]) -> Callable[[], None]:
        for t in tensors:  # in-place updates of these must not keep CUDA graphs from forming
            torch._dynamo.mark_static_address(t)
        mode = "reduce-overhead" if self.device.type == "cuda" else None
        fn = torch.compile(fn, mode=mode, fullgraph=True, dynamic=False)
        prime(fn)  # compile, and on CUDA record the graph (first call warms up, the next ones record)
        prime(fn)
        prime(fn)
        return fn

    def _cuda_graph(self, fn, prime: Callable[[Callable[[], None]], None]) -> Callable[[], None]:
        """Warm up on a side stream, then capture one call of fn into a CUDA graph."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            prime(fn)
            prime(fn)
        torch.cuda.current_stream().wait_stream(stream)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        # thread_local: another engine's thread may use the GPU while this one captures
        with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
            prime(fn)
        return graph.replay

    def _prime_decode(self, s: Bucket) -> Callable[[Callable[[], None]], None]:
        """Run (or capture) a decode step on throwaway state: the last cache column, which no row
        ever reaches (see `_prefill`), masked out again afterwards."""
        scratch = self.cache.length - 1

        def prime(fn):
            s.slot.fill_(scratch)
            s.col.zero_()
            s.done.fill_(True)
            fn()
            self.cache.valid[:, scratch] = False
        return prime

    @torch.inference_mode()
    def _warmup(self, buckets: list[int], sample: bool, lookup_k: list[int]) -> dict:
        for b in buckets:
            s = self._bucket_for(b)
            for variant in ([False, True] if sample else [False]):
                self._step_fn(s, variant)
        for k in lookup_k:
            verify_for(self, k)
        self.cache.reset()
        return dict(self.capture_s)


def _seed(sampling) -> int:
    if sampling.greedy:
        return 0
    return int(sampling.seed if sampling.seed is not None else torch.seed() & 0x7FFFFFFF) & 0x7FFFFFFF


#: engine_kwargs of the hf engine that configure the static path
STATIC_KWARGS = frozenset({"static_max_len", "static_buckets", "static_capture", "static_check_every"})


def engine_decoder(model, tokenizer, eos_ids, pad_id: int, max_batch: int, options: dict) -> StaticDecoder:
    """The static decoder of an hf engine. `options` (engine_kwargs): static_max_len (cache
    columns, default min(context, 4096)), static_buckets (batch sizes captured, default 1..8 and
    max_batch), static_capture (graph on CUDA, none on CPU; or compile), static_check_every.
    Captures every bucket now, at start-up, so no request pays for it."""
    device = next(model.parameters()).device
    text = model.config.get_text_config(decoder=True) if hasattr(model.config, "get_text_config") else model.config
    context = int(getattr(text, "max_position_embeddings", 0) or 4096)
    max_len = int(options.get("static_max_len", min(context, 4096)))
    rows = max(1, int(max_batch))
    buckets = sorted({int(b) for b in options.get("static_buckets") or [*range(1, min(rows, 8) + 1), rows]})
    capture = options.get("static_capture", "graph" if device.type == "cuda" else "none")
    vocab = model.get_output_embeddings().weight.shape[0]
    tables = StopTables.from_tokenizer(tokenizer, sorted(eos_ids), vocab)
    decoder = StaticDecoder(model, tables, max_rows=buckets[-1], max_len=max_len, buckets=buckets, capture=capture,
                            check_every=int(options.get("static_check_every", 2)), pad_id=pad_id)
    if capture != "none":
        decoder.warmup()
    return decoder
