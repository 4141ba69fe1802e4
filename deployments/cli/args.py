"""Command-line options shared by `lookahead generate` and `lookahead bench`, and the AppConfig
they describe."""
from __future__ import annotations

import argparse

from orchestrator.modes import VERIFIER_KINDS

DEFAULT_TARGET = "qwen2.5-0.5b"
DEFAULT_DRAFT = "smollm2-135m"


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default=DEFAULT_TARGET, help="target model: short name, path or cached hub id")
    p.add_argument("--draft", default=DEFAULT_DRAFT, help="draft model")
    p.add_argument("--judge", default=None, help="judge model for --verifier llm-judge")
    p.add_argument("--engine", choices=("hf", "vllm"), default="hf")
    p.add_argument("--verifier", choices=VERIFIER_KINDS, default="exact")
    p.add_argument("--threshold", type=float, default=None, help="verifier threshold (per-kind default)")
    p.add_argument("--no-numeric-guard", action="store_true", help="embedding verifier without the guard")
    p.add_argument("--sd-tokens", type=int, default=4, help="token-level speculative tokens in sd modes")
    p.add_argument("--batch-invariant", action="store_true",
                   help="hf engine: run batch rows one by one (bit-identical greedy results)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--target-cores", default=None, metavar="CORES",
                   help="vLLM-CPU: bind the target's threads to these cores, e.g. 1 or 2-3 (the cpu-split profile)")
    p.add_argument("--draft-cores", default=None, metavar="CORES", help="vLLM-CPU: the draft's cores, e.g. 0")


def add_lookahead_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--depth", type=_depth, default="auto",
                   help="g: drafted steps per cycle, or 'auto' (chosen each cycle by the cost model)")
    p.add_argument("--width", type=int, default=1, help="W: sibling drafts per position")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--max-step-tokens", type=int, default=100)
    p.add_argument("--seed", type=int, default=None)
    sched = p.add_mutually_exclusive_group()
    sched.add_argument("--sync", dest="schedule", action="store_const", const="sync")
    sched.add_argument("--async", dest="schedule", action="store_const", const="async")
    p.set_defaults(schedule="sync")


def app_config_from_args(args, mode: str):
    from deployments.config import AppConfig, EngineConfig, LookaheadDefaults, RoleConfig, VerifierConfig

    sd = mode.endswith("sd")
    common = dict(engine=args.engine, device=args.device, dtype=args.dtype, batch_invariant=args.batch_invariant)
    target = EngineConfig(model=args.target, token_speculation="ngram" if sd else "none",
                          num_speculative_tokens=args.sd_tokens, cpu_cores=getattr(args, "target_cores", None),
                          **common)
    draft = EngineConfig(model=args.draft, cpu_cores=getattr(args, "draft_cores", None), **common)
    speculate = mode.startswith("lr")
    return AppConfig(
        target=RoleConfig(engine=target),
        draft=RoleConfig(engine=draft) if speculate else None,
        judge=RoleConfig(engine=EngineConfig(model=args.judge, **common)) if speculate and args.judge else None,
        verifier=VerifierConfig(kind=args.verifier, threshold=args.threshold,
                                numeric_guard=not args.no_numeric_guard),
        defaults=LookaheadDefaults(mode=mode, depth=args.depth, width=args.width, schedule=args.schedule,
                                   max_step_tokens=args.max_step_tokens, max_tokens=args.max_tokens,
                                   temperature=args.temperature, top_p=args.top_p, top_k=args.top_k),
    )


def _depth(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"depth must be 'auto' or an integer, not {value!r}") from None
