"""The static decoder's device state and its per-token step: the KV cache of `rows` x `length`
slots, the fixed-shape state of one batch bucket, and the function that feeds each row's token,
chooses the next and updates the stop state, all on the device (what gets captured as a CUDA
graph, deployments/engines/static_decode.py)."""
from __future__ import annotations

from typing import Callable

import torch

from deployments.engines.step_tables import DELIMITER, EOS, F_DD, F_ENDS_NL, F_EOS, F_STARTS_NL, LIMIT, StopTables

_M32 = 0xFFFFFFFF


class Cache:
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


class Bucket:
    """Fixed-shape per-call state for a batch of `b` rows; the captured step reads and mutates it."""

    def __init__(self, cache: Cache, b: int, tables: StopTables, device) -> None:
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


def choose(logits: torch.Tensor, s: Bucket, sample: bool) -> torch.Tensor:
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


def advance(s: Bucket, tok: torch.Tensor) -> None:
    """Record one chosen token per row and update the stop state, all on the device."""
    active = ~s.done
    f = s.flags[tok].long()
    eos = active & ((f & F_EOS) > 0)
    kept = active & ~eos
    n = s.n_out + kept.long()
    delim = kept & (((f & F_DD) > 0) | (s.prev_nl & ((f & F_STARTS_NL) > 0)))
    limit = kept & ~delim & (n >= s.limit)
    s.out.index_copy_(1, s.col, tok[:, None])  # the kept tokens are a prefix of the chosen ones
    s.col.add_(1)
    s.prev_nl.copy_((f & F_ENDS_NL) > 0)
    reason = torch.where(eos, EOS, torch.where(delim, DELIMITER, torch.where(limit, LIMIT, s.reason)))
    s.reason.copy_(reason)
    s.n_out.copy_(n)
    done = s.done | eos | delim | limit
    s.done.copy_(done)
    s.all_done.copy_(done.all().reshape(1))
    s.tok.copy_(tok)


def decode_step(model, s: Bucket, sample: bool) -> None:
    """Feed each row's current token, choose the next: the function that gets captured."""
    s.valid.index_fill_(1, s.slot, True)
    mask = (s.valid & (s.arange_len <= s.slot))[:, None, None, :]
    logits = model(input_ids=s.tok[:, None], position_ids=s.pos[:, None],
                   attention_mask=mask, use_cache=False,
                   lookahead_kv=s.layers, lookahead_slots=s.slot).logits[:, -1, :]
    s.slot.add_(1)
    s.pos.add_(1)
    advance(s, choose(logits, s, sample))

