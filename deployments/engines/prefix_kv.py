"""Choice scoring over prompts that open alike: the shared opening's keys and values computed once.

Judge and rater prompts are a fixed opening (system message and worked examples, about 250
tokens) followed by the pair to rule on. Scoring them one by one from scratch spends most of each
forward pass on that opening again; vLLM's prefix caching absorbs it, the transformers engine does
it here. Where a prompt is split depends on the prompt alone (its chat before the last message),
never on what else is in the batch or was scored before, so a verdict does not change with the
company it keeps.
"""
from __future__ import annotations

from collections import OrderedDict

import torch

from orchestrator.types import Prompt

#: openings shorter than this are not worth a cache entry
MIN_OPENING = 32


def opening_of(prompt: Prompt) -> Prompt | None:
    """The chat before the prompt's last message (rendered without a generation prompt), or None."""
    if not prompt.messages or len(prompt.messages) < 2 or prompt.continue_final_message:
        return None
    return Prompt(messages=prompt.messages[:-1], chat_template_kwargs=prompt.chat_template_kwargs,
                  add_generation_prompt=False)


class PrefixKV:
    """Last-position logits of token rows, reusing the cached keys and values of their openings."""

    def __init__(self, model, device: str, size: int = 4) -> None:
        self.model = model
        self.device = device
        self.size = size
        self._kv: OrderedDict[tuple[int, ...], object] = OrderedDict()

    def last_logits(self, ids: list[int], split: int) -> torch.Tensor:
        """Logits after `ids`; ids[:split] is the opening (0: none). Only the last position goes
        through the vocabulary projection (logits_to_keep=1): over a whole judge prompt that
        projection is about a quarter of a small model's forward pass."""
        if split < MIN_OPENING or split >= len(ids):
            return self.model(input_ids=torch.tensor([ids], device=self.device), logits_to_keep=1).logits[0, -1]
        key = tuple(ids[:split])
        kv = self._opening(key)
        try:
            out = self.model(input_ids=torch.tensor([ids[split:]], device=self.device), past_key_values=kv,
                             use_cache=True, logits_to_keep=1)
        except BaseException:
            self._kv.pop(key, None)  # a forward cut short may have extended some layers only: recompute next time
            raise
        kv.crop(split - len(ids))  # drop this prompt's own tokens: the opening alone again (negative: how many)
        return out.logits[0, -1]

    def _opening(self, key: tuple[int, ...]):
        kv = self._kv.get(key)
        if kv is None:
            kv = self.model(input_ids=torch.tensor([list(key)], device=self.device), use_cache=True,
                             logits_to_keep=1).past_key_values
            self._kv[key] = kv
            while len(self._kv) > self.size:
                self._kv.popitem(last=False)
        self._kv.move_to_end(key)
        return kv
