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
"""
from __future__ import annotations

import concurrent.futures
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

ATTENTION = "lookahead_static"
# reason codes written by the device
_RUNNING, _EOS, _DELIMITER, _LIMIT = 0, 1, 2, 3
# token flag bits
_F_EOS, _F_DD, _F_STARTS_NL, _F_ENDS_NL = 1, 2, 4, 8
_M32 = 0xFFFFFFFF


# -- attention over the static cache ---------------------------------------------------
def _static_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Writes this forward's keys/values into the static cache, then attends over the whole
    cache under the caller's [B, 1, Q, L] boolean mask. Without a static cache in the kwargs
    (the dynamic path on the same model) it is plain sdpa."""
    layers = kwargs.pop("lookahead_kv", None)
    slots = kwargs.pop("lookahead_slots", None)
    if layers is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    k_cache, v_cache = layers[module.layer_idx]
    k_cache.index_copy_(2, slots, key.to(k_cache.dtype))
    v_cache.index_copy_(2, slots, value.to(v_cache.dtype))
    b, h, q, d = query.shape
    hkv = k_cache.shape[1]
    g = h // hkv
    # Grouped-query attention without repeating the cache: the g query heads of one kv head
    # become g*q query rows (sdpa's own GQA path falls back to the slow kernel under a mask).
    qg = query.reshape(b, hkv, g * q, d)
    mask = attention_mask.unsqueeze(2).expand(b, 1, g, q, attention_mask.shape[-1]).reshape(b, 1, g * q, -1)
    out = torch.nn.functional.scaled_dot_product_attention(qg, k_cache, v_cache, attn_mask=mask, scale=scaling)
    return out.reshape(b, h, q, d).transpose(1, 2).contiguous(), None


_install_lock = threading.Lock()


def install_static_attention(model) -> None:
    """Route the model's attention through `_static_attention` (sdpa unless a static cache is passed)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    with _install_lock:
        current = model.config._attn_implementation
        if current == ATTENTION:
            return
        if current != "sdpa":
            raise ValueError(f"static decoding needs a model loaded with sdpa attention, not {current!r}")
        AttentionInterface.register(ATTENTION, _static_attention)
        # the dynamic path still builds its masks the sdpa way
        AttentionMaskInterface.register(ATTENTION, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
        model.set_attn_implementation(ATTENTION)


# -- token tables ------------------------------------------------------------------------
@dataclass
class StopTables:
    """Per-token flags on the device: EOS, contains "\\n\\n", starts with "\\n", ends with "\\n"."""

    flags: torch.Tensor  # uint8 [vocab]

    @classmethod
    def from_tokenizer(cls, tokenizer, eos_ids: Sequence[int], vocab_size: int, delimiter: str = "\n\n") -> "StopTables":
        if delimiter != "\n\n":
            raise ValueError("the step-end tables are built for the '\\n\\n' delimiter")
        n = min(len(tokenizer), vocab_size)
        pieces = tokenizer.batch_decode([[i] for i in range(n)])  # as hf's loop decodes one token
        flags = torch.zeros(vocab_size, dtype=torch.uint8)
        for i, p in enumerate(pieces):
            if "\n" in p:
                flags[i] = ((_F_DD if "\n\n" in p else 0) | (_F_STARTS_NL if p.startswith("\n") else 0)
                            | (_F_ENDS_NL if p.endswith("\n") else 0))
        for e in eos_ids:
            if 0 <= e < vocab_size:
                flags[e] |= _F_EOS
        return cls(flags)

    @classmethod
    def none(cls, vocab_size: int) -> "StopTables":
        """No stops at all: every row runs to its token limit (replayed step lengths)."""
        return cls(torch.zeros(vocab_size, dtype=torch.uint8))

    def to(self, device) -> "StopTables":
        return StopTables(self.flags.to(device))


class HostRule:
    """The same step-end rule on the host, one token at a time (prompt lookup verifies on the host anyway)."""

    def __init__(self, flags: list[int]) -> None:
        self.flags = flags  # StopTables.flags as a host list
        self.prev_nl = False  # only this step's previous token counts, as in hf's loop

    def advance(self, row, token: int) -> bool:
        """hf's `_advance` by table lookup: append the token, False when the step is over."""
        f = self.flags[token] if 0 <= token < len(self.flags) else 0
        if row.cancelled.is_set():
            row.reason = "step_limit"
            return False
        if f & _F_EOS:
            row.reason = "eos"
            return False
        row.out.append(token)
        ends = bool(f & _F_DD) or (self.prev_nl and bool(f & _F_STARTS_NL))
        self.prev_nl = bool(f & _F_ENDS_NL)
        if ends:
            row.reason = "delimiter"
            return False
        if len(row.out) >= row.limit:
            row.reason = "budget" if row.budget_cut else "step_limit"
            return False
        return True


# -- device state ----------------------------------------------------------------------------
class _Cache:
    """The static KV cache (all layers, `rows` x `length` slots) and what each row holds."""

    def __init__(self, config, rows: int, length: int, dtype: torch.dtype, device) -> None:
        text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
        layer_types = getattr(text, "layer_types", None) or []
        if any(t != "full_attention" for t in layer_types):
            raise ValueError("static decoding supports full-attention models only (no sliding-window layers)")
        hkv = text.num_key_value_heads
        d = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        shape = (rows, hkv, length, d)
        self.layers = [(torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device))
                       for _ in range(text.num_hidden_layers)]
        self.valid = torch.zeros(rows, length, dtype=torch.bool, device=device)
        self.rows, self.length = rows, length
        self.tokens: list[list[int]] = [[] for _ in range(rows)]  # the tokens whose KV each row holds
        self.slots: list[list[int]] = [[] for _ in range(rows)]  # and the slot of each
        self.end = 0  # next free column, shared by every row
        self.bytes = 2 * sum(k.numel() * k.element_size() for k, _ in self.layers)

    def reset(self) -> None:
        self.valid.zero_()
        self.tokens = [[] for _ in range(self.rows)]
        self.slots = [[] for _ in range(self.rows)]
        self.end = 0


class _Bucket:
    """Fixed-shape per-call state for a batch of `b` rows; the captured step reads and mutates it."""

    def __init__(self, cache: _Cache, b: int, tables: StopTables, device) -> None:
        self.b = b
        self.layers = [(k[:b], v[:b]) for k, v in cache.layers]
        self.valid = cache.valid[:b]
        self.flags = tables.flags
        self.arange_len = torch.arange(cache.length, device=device)
        self.vocab_ids = torch.arange(tables.flags.numel(), device=device)
        z = lambda dt: torch.zeros(b, dtype=dt, device=device)  # noqa: E731
        self.tok, self.pos, self.n_out, self.limit, self.reason, self.seed, self.top_k = (z(torch.long) for _ in range(7))
        self.done, self.prev_nl, self.greedy = z(torch.bool), z(torch.bool), z(torch.bool)
        self.temp, self.top_p = z(torch.float32), z(torch.float32)
        self.slot = torch.zeros(1, dtype=torch.long, device=device)
        self.col = torch.zeros(1, dtype=torch.long, device=device)
        self.all_done = torch.zeros(1, dtype=torch.bool, device=device)
        self.out = torch.zeros(b, cache.length, dtype=torch.long, device=device)
        self.graphs: dict[bool, Callable[[], None]] = {}  # sample? -> replayable step

    def tensors(self) -> list[torch.Tensor]:
        return [t for kv in self.layers for t in kv] + [
            self.valid, self.flags, self.arange_len, self.vocab_ids, self.tok, self.pos, self.n_out, self.limit,
            self.reason, self.seed, self.top_k, self.done, self.prev_nl, self.greedy, self.temp, self.top_p,
            self.slot, self.col, self.all_done, self.out]


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (int64 arithmetic that never overflows: x < 2^32, factor < 2^27)."""
    x = ((x >> 16) ^ x) * 0x45D9F3B & _M32
    x = ((x >> 16) ^ x) * 0x45D9F3B & _M32
    return (x >> 16) ^ x


def _gumbel(seed: torch.Tensor, pos: torch.Tensor, vocab_ids: torch.Tensor) -> torch.Tensor:
    """Gumbel noise, a pure function of (row seed, position, token id): reproducible, graph-safe."""
    h = _mix32(_mix32(seed & _M32) ^ (pos & _M32))
    x = _mix32((h[:, None] + vocab_ids[None, :] * 0x9E3779B1) & _M32)
    u = ((x >> 8).float() + 0.5) * (1.0 / (1 << 24))
    return -torch.log(-torch.log(u))


def _choose(logits: torch.Tensor, s: _Bucket, sample: bool) -> torch.Tensor:
    greedy = logits.argmax(-1)
    if not sample:
        return greedy
    # temperature, top-k (ties at the k-th value kept) and top-p (the smallest set reaching
    # top_p), as in hf's `_choose`, then one Gumbel-max draw per row
    lg = logits.float() / s.temp.clamp(min=1e-6)[:, None]
    vocab = lg.shape[-1]
    sorted_lg, order = lg.sort(-1, descending=True)
    k = torch.where(s.top_k > 0, s.top_k.clamp(max=vocab), torch.full_like(s.top_k, vocab))
    kth = sorted_lg.gather(1, (k - 1)[:, None])
    sorted_lg = sorted_lg.masked_fill(sorted_lg < kth, float("-inf"))
    sp = sorted_lg.softmax(-1)
    drop = (sp.cumsum(-1) - sp) > s.top_p[:, None]
    keep = torch.zeros_like(drop).scatter(1, order, ~drop)
    lg = lg.masked_fill(~keep | (lg < kth), float("-inf"))
    sampled = (lg + _gumbel(s.seed, s.pos, s.vocab_ids)).argmax(-1)
    return torch.where(s.greedy, greedy, sampled)


def _advance(s: _Bucket, tok: torch.Tensor) -> None:
    """Record one chosen token per row and update the stop state, all on the device."""
    active = ~s.done
    f = s.flags[tok].long()
    eos = active & ((f & _F_EOS) > 0)
    kept = active & ~eos
    n = s.n_out + kept.long()
    delim = kept & (((f & _F_DD) > 0) | (s.prev_nl & ((f & _F_STARTS_NL) > 0)))
    limit = kept & ~delim & (n >= s.limit)
    s.out.index_copy_(1, s.col, tok[:, None])  # the kept tokens are a prefix of the chosen ones
    s.col.add_(1)
    s.prev_nl.copy_((f & _F_ENDS_NL) > 0)
    reason = torch.where(eos, _EOS, torch.where(delim, _DELIMITER, torch.where(limit, _LIMIT, s.reason)))
    s.reason.copy_(reason)
    s.n_out.copy_(n)
    done = s.done | eos | delim | limit
    s.done.copy_(done)
    s.all_done.copy_(done.all().reshape(1))
    s.tok.copy_(tok)


def _decode_step(model, s: _Bucket, sample: bool) -> None:
    """Feed each row's current token, choose the next: the function that gets captured."""
    s.valid.index_fill_(1, s.slot, True)
    mask = (s.valid & (s.arange_len <= s.slot))[:, None, None, :]
    logits = model(input_ids=s.tok[:, None], position_ids=s.pos[:, None],
                   attention_mask=mask, use_cache=False,
                   lookahead_kv=s.layers, lookahead_slots=s.slot).logits[:, -1, :]
    s.slot.add_(1)
    s.pos.add_(1)
    _advance(s, _choose(logits, s, sample))


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
    """Decodes rows (hf's `_Row`: ids, sampling, limit, budget_cut, out, reason, cancelled) on a
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
        self.cache = _Cache(model.config, max_rows, max_len, dtype, self.device)
        self._buckets: dict[int, _Bucket] = {}
        self._lookup: dict[int, _Verify] = {}
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
        implement (bias, repetition penalty, min_p), and room in the cache (the last column is
        scratch; prompt lookup needs one verify block more)."""
        s = row.sampling
        if getattr(s, "shapes_logits", False) or getattr(s, "min_p", 0.0) > 0.0:
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
        self._thread.submit(self._run_lookup, row, k, propose, stats).result()

    def warmup(self, buckets: Sequence[int] | None = None, sample: bool = False, lookup_k: Sequence[int] = ()) -> dict:
        """Capture/compile the decode step for these buckets (and verify shapes) now, not at first use."""
        return self._thread.submit(self._warmup, list(buckets or self.buckets), sample, list(lookup_k)).result()

    def reset(self) -> None:
        """Forget every cached row (after any work in flight)."""
        self._thread.submit(self.cache.reset).result()

    def close(self) -> None:
        self._thread.shutdown(wait=True)

    # -- one chunk --------------------------------------------------------------------------
    def _bucket_for(self, n: int) -> _Bucket:
        b = next(x for x in self.buckets if x >= n)
        if b not in self._buckets:
            self._buckets[b] = _Bucket(self.cache, b, self.tables, self.device)
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
        _advance(s, _choose(logits, s, sample))  # the first token, from the prefill's logits
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

    def _loop(self, s: _Bucket, step: Callable[[], None], budget: int, rows) -> int:
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
    def _apply_cancellations(s: _Bucket, rows) -> None:
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
            if r.cancelled.is_set() and code == _RUNNING:
                r.reason = "step_limit"
            elif code == _EOS:
                r.reason = "eos"
            elif code == _DELIMITER:
                r.reason = "delimiter"
            elif code == _LIMIT:
                r.reason = "budget" if r.budget_cut else "step_limit"
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
    def _step_fn(self, s: _Bucket, sample: bool) -> Callable[[], None]:
        if sample not in s.graphs:
            s.graphs[sample] = self._make_step(s, sample)
        return s.graphs[sample]

    def _make_step(self, s: _Bucket, sample: bool) -> Callable[[], None]:
        model = self.model
        fn = lambda: _decode_step(model, s, sample)  # noqa: E731
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

    def _prime_decode(self, s: _Bucket) -> Callable[[Callable[[], None]], None]:
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
            self._verify_for(k)
        self.cache.reset()
        return dict(self.capture_s)

    # -- prompt lookup --------------------------------------------------------------------------
    def _verify_for(self, k: int) -> "_Verify":
        """The [1, k+1] verify forward, captured on first use. Priming writes the last k+1 columns
        of cache row 0, which a live row may use, so the cache is reset afterwards (call this
        before placing a row)."""
        if k not in self._lookup:
            v = _Verify(self, k)
            t0 = time.perf_counter()
            fn = lambda: _verify_step(self.model, v)  # noqa: E731

            def prime(f):
                v.slot.fill_(self.cache.length - 1 - k)
                f()
            if self.capture == "graph":
                fn = self._cuda_graph(fn, prime)
            elif self.capture == "compile":
                fn = self._compiled(fn, v.tensors(), prime)
            self.cache.reset()
            v.fn = fn
            self.capture_s[f"verify k={k}"] = round(time.perf_counter() - t0, 3)
            self._lookup[k] = v
        return self._lookup[k]

    @torch.inference_mode()
    def _run_lookup(self, row, k: int, propose, stats: dict | None) -> None:
        if row.limit <= 0:
            row.reason = "budget"
            return
        v = self._verify_for(k)
        c = self.cache
        rule = HostRule(self._host_flags())
        # room for every token plus one verify block past the last
        logits = self._prefill([row.ids], 1, row.limit + k + 1)
        start = c.end
        token = int(logits[0].argmax())
        fed = 0  # output tokens fed so far: out[i]'s KV sits in column start + i
        written = start
        context = list(row.ids)
        while True:
            if not rule.advance(row, token):
                break
            context.append(token)
            proposal = propose(context, min(k, row.limit - len(row.out)))
            if proposal and stats is not None:
                stats["spec_steps"] += 1
                stats["draft_tokens"] += len(proposal)
            feed = [token] + proposal + [self.pad_id] * (k - len(proposal))
            base = start + len(row.out) - 1
            v.tok.copy_(torch.tensor([feed], device=self.device))
            v.pos.copy_(torch.arange(len(context) - 1, len(context) + k, device=self.device)[None])
            v.slot.fill_(base)
            v.fn()
            written = max(written, base + k + 1)
            best = v.argmax.tolist()
            stop = False
            accepted = 0
            for j, proposed in enumerate(proposal):
                if best[j] != proposed:
                    break
                if not rule.advance(row, proposed):
                    stop = True
                    break
                context.append(proposed)
                accepted += 1
                if stats is not None:
                    stats["accepted_tokens"] += 1
            fed = len(row.out)  # the head token and every proposal appended were in this feed
            if stop:
                break
            token = best[accepted]
        c.valid[0, start + fed:max(written, start + fed)] = False
        c.tokens[0] += row.out[:fed]
        c.slots[0] += range(start, start + fed)
        c.end = max(written, start + fed)
        self.stats["calls"] += 1

    def _host_flags(self) -> list[int]:
        if not hasattr(self, "_flags_list"):
            self._flags_list = self.host_rule_tables.flags.tolist()
        return self._flags_list


class _Verify:
    """Fixed-shape state of a prompt-lookup verify forward: one row, k + 1 tokens."""

    def __init__(self, dec: StaticDecoder, k: int) -> None:
        dev = dec.device
        self.k = k
        s = dec._bucket_for(1)
        self.layers, self.valid, self.arange_len = s.layers, s.valid, s.arange_len
        self.tok = torch.zeros(1, k + 1, dtype=torch.long, device=dev)
        self.pos = torch.zeros(1, k + 1, dtype=torch.long, device=dev)
        self.slot = torch.zeros(1, dtype=torch.long, device=dev)
        self.offsets = torch.arange(k + 1, device=dev)
        self.argmax = torch.zeros(k + 1, dtype=torch.long, device=dev)
        self.fn: Callable[[], None] = lambda: None

    def tensors(self) -> list[torch.Tensor]:
        return [t for kv in self.layers for t in kv] + [self.valid, self.arange_len, self.tok, self.pos, self.slot,
                                                         self.offsets, self.argmax]


def _verify_step(model, v: _Verify) -> None:
    slots = v.slot + v.offsets
    v.valid.index_fill_(1, slots, True)
    # stale columns past a query are hidden by causality and rewritten by the next verify
    mask = (v.valid[:, None, :] & (v.arange_len[None, None, :] <= slots[None, :, None]))[:, None]
    logits = model(input_ids=v.tok, position_ids=v.pos, attention_mask=mask, use_cache=False,
                   lookahead_kv=v.layers, lookahead_slots=slots).logits[0]
    v.argmax.copy_(logits.argmax(-1))


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
