"""Reference answers: plain greedy target decoding in this process, computed once per session.

A lossless request (greedy, the exact verifier) must reproduce its model's plain decoding token for
token, whatever path it took (speculation, Serve, HTTP or gRPC); these are the answers it is held to.
Answers are kept per (engine config, prompt, token budget): a later module asking for the same one
(a Serve module after the in-process engine was shut down) gets it without loading the model again.
"""
from __future__ import annotations

import asyncio
import json

from deployments.config import EngineConfig
from orchestrator.lookahead import LookaheadParams, generate
from orchestrator.types import GenerationResult, Prompt

_CACHE: dict[tuple, GenerationResult] = {}


async def greedy_reference_async(engines, cfg: EngineConfig, messages: list[dict] | None, max_tokens: int, *,
                                 prompt: str | None = None) -> GenerationResult:
    key = (cfg.model_dump_json(), json.dumps(messages), prompt, max_tokens)
    if key not in _CACHE:
        p = Prompt(messages=messages) if prompt is None else Prompt(text=prompt)
        _CACHE[key] = await generate(engines.engine(cfg), p, LookaheadParams(mode="ar", max_tokens=max_tokens,
                                                                             max_step_tokens=100))
    return _CACHE[key]


def greedy_reference(engines, cfg: EngineConfig, messages: list[dict] | None, max_tokens: int, *,
                     prompt: str | None = None) -> GenerationResult:
    """Sync form for tests that do not run an event loop (the Serve tests)."""
    return asyncio.run(greedy_reference_async(engines, cfg, messages, max_tokens, prompt=prompt))
