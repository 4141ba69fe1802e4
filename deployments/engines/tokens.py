"""Tokenization every engine shares: prompts and accepted steps to token ids, tokenizer keys, EOS ids.

Shared by every engine. Steps from an engine with the same tokenizer keep their token ids;
runs of steps from another tokenizer are re-encoded as one text, so a foreign step boundary
never splits what the model would have tokenized as one piece.
"""
from __future__ import annotations

import hashlib
import json

from orchestrator.types import Prompt, Step


class PromptRenderer:
    """Renders prompts with the model's chat template (when it has one), cached per prompt."""

    def __init__(self, tokenizer, cache_size: int = 256) -> None:
        self.tokenizer = tokenizer
        self._cache: dict[str, list[int]] = {}
        self._cache_size = cache_size

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def text(self, prompt: Prompt) -> str:
        if prompt.messages is not None:
            if getattr(self.tokenizer, "chat_template", None):
                return self.tokenizer.apply_chat_template(
                    prompt.messages, add_generation_prompt=prompt.add_generation_prompt,
                    continue_final_message=prompt.continue_final_message, tokenize=False,
                    **(prompt.chat_template_kwargs or {}))
            # no template: a plain transcript, still ending where the assistant speaks (or, to
            # continue the last message, ending with it)
            lines = [f"{m['role']}: {m['content']}" for m in prompt.messages]
            return "\n".join(lines) + ("\nassistant: " if prompt.add_generation_prompt else "")
        return prompt.text

    def ids(self, prompt: Prompt) -> list[int]:
        key = json.dumps([prompt.messages, prompt.text, prompt.chat_template_kwargs, prompt.add_generation_prompt,
                          prompt.continue_final_message], sort_keys=True)
        if key not in self._cache:
            if len(self._cache) >= self._cache_size:
                self._cache.pop(next(iter(self._cache)))
            text = self.text(prompt)
            add_special = prompt.messages is None  # chat templates already carry BOS
            self._cache[key] = self.tokenizer.encode(text, add_special_tokens=add_special)
        return self._cache[key]


def context_ids(prompt_ids: list[int], prefix: list[Step], key: str, encode) -> list[int]:
    ids = list(prompt_ids)
    foreign: list[str] = []
    for step in prefix:
        if step.tokenizer_key == key:
            if foreign:
                ids += encode("".join(foreign))
                foreign = []
            ids += step.token_ids
        else:
            foreign.append(step.text)
    if foreign:
        ids += encode("".join(foreign))
    return ids


def tokenizer_key(tokenizer) -> str:
    """Equal keys <=> identical vocabularies: token ids can cross between the two models."""
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(vocab).encode()).hexdigest()[:16]


def eos_token_ids(tokenizer, generation_config) -> set[int]:
    ids = set()
    for source in (getattr(generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(source, int):
            ids.add(source)
        elif source:
            ids.update(source)
    return ids
