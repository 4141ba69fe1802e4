"""Prompt lookup on the static cache: greedy decoding of one row whose proposals (tokens copied
from the context) are verified k at a time in one fixed-shape [1, k + 1] forward, token-level
speculation inside a step. It works on a StaticDecoder's cache and capture
(deployments/engines/static_decode.py), which calls it on its own thread."""
from __future__ import annotations

import time
from typing import Callable

import torch

from deployments.engines.step_tables import HostRule


def verify_for(dec, k: int) -> "Verify":
    """The [1, k+1] verify forward, captured on first use. Priming writes the last k+1 columns
    of cache row 0, which a live row may use, so the cache is reset afterwards (call this
    before placing a row)."""
    if k not in dec._lookup:
        v = Verify(dec, k)
        t0 = time.perf_counter()
        fn = lambda: verify_step(dec.model, v)  # noqa: E731

        def prime(f):
            v.slot.fill_(dec.cache.length - 1 - k)
            f()
        if dec.capture == "graph":
            fn = dec._cuda_graph(fn, prime)
        elif dec.capture == "compile":
            fn = dec._compiled(fn, v.tensors(), prime)
        dec.cache.reset()
        v.fn = fn
        dec.capture_s[f"verify k={k}"] = round(time.perf_counter() - t0, 3)
        dec._lookup[k] = v
    return dec._lookup[k]


@torch.inference_mode()
def run_lookup(dec, row, k: int, propose: Callable[[list[int], int], list[int]], stats: dict | None) -> None:
    """StaticDecoder.run_lookup, on the decoder's thread."""
    if row.limit <= 0:
        row.reason = "budget"
        return
    v = verify_for(dec, k)
    c = dec.cache
    rule = HostRule(_host_flags(dec))
    # room for every token plus one verify block past the last
    logits = dec._prefill([row.ids], 1, row.limit + k + 1)
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
        feed = [token] + proposal + [dec.pad_id] * (k - len(proposal))
        base = start + len(row.out) - 1
        v.tok.copy_(torch.tensor([feed], device=dec.device))
        v.pos.copy_(torch.arange(len(context) - 1, len(context) + k, device=dec.device)[None])
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
    dec.stats["calls"] += 1


def _host_flags(dec) -> list[int]:
    if not hasattr(dec, "_flags_list"):
        dec._flags_list = dec.host_rule_tables.flags.tolist()
    return dec._flags_list


class Verify:
    """Fixed-shape state of a prompt-lookup verify forward: one row, k + 1 tokens."""

    def __init__(self, dec, k: int) -> None:
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


def verify_step(model, v: Verify) -> None:
    slots = v.slot + v.offsets
    v.valid.index_fill_(1, slots, True)
    # stale columns past a query are hidden by causality and rewritten by the next verify
    mask = (v.valid[:, None, :] & (v.arange_len[None, None, :] <= slots[None, :, None]))[:, None]
    logits = model(input_ids=v.tok, position_ids=v.pos, attention_mask=mask, use_cache=False,
                   lookahead_kv=v.layers, lookahead_slots=slots).logits[0]
    v.argmax.copy_(logits.argmax(-1))
