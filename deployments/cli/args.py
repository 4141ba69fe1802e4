"""Command-line options shared by `lookahead generate` and `lookahead bench run`, and the
AppConfig they describe (AppConfig.for_models). An option left unset takes the config's default,
which the help text shows."""
from __future__ import annotations

import argparse

from deployments.config import ENGINES, AppConfig, EngineConfig, LookaheadDefaults, VerifierConfig
from verifier.kinds import VERIFIER_KINDS

DEFAULT_TARGET = "qwen2.5-0.5b"
DEFAULT_DRAFT = "smollm2-135m"
_SESSION = LookaheadDefaults()
_ENGINE = EngineConfig(model="-")


def add_model_args(p: argparse.ArgumentParser, overrides: dict | None = None) -> None:
    """The model and engine options; `overrides`: defaults of a command that differ from the config's."""
    d = _defaults(overrides, engine=_ENGINE.engine, verifier=VerifierConfig().kind, sd_tokens=_ENGINE.num_speculative_tokens,
                  device=_ENGINE.device, dtype=_ENGINE.dtype)
    p.add_argument("--target", default=DEFAULT_TARGET, help="target model: short name, path or cached hub id")
    p.add_argument("--draft", default=DEFAULT_DRAFT, help="draft model")
    p.add_argument("--judge", default=None, help="judge model for --verifier llm-judge")
    p.add_argument("--engine", choices=ENGINES, **d("engine"))
    p.add_argument("--verifier", choices=VERIFIER_KINDS, **d("verifier"))
    p.add_argument("--threshold", type=float, default=None, help="verifier threshold (per-kind default)")
    p.add_argument("--no-numeric-guard", action="store_true", help="a semantic verifier without the numeric guard")
    p.add_argument("--sd-tokens", type=int, **d("sd_tokens", "token-level speculative tokens in sd modes"))
    p.add_argument("--batch-invariant", action="store_true",
                   help="hf engine: run batch rows one by one (bit-identical greedy results)")
    p.add_argument("--device", **d("device"))
    p.add_argument("--dtype", **d("dtype"))
    p.add_argument("--target-cores", default=None, metavar="CORES",
                   help="vLLM-CPU: bind the target's threads to these cores, e.g. 1 or 2-3 (the cpu-split profile)")
    p.add_argument("--draft-cores", default=None, metavar="CORES", help="vLLM-CPU: the draft's cores, e.g. 0")


def add_lookahead_args(p: argparse.ArgumentParser, overrides: dict | None = None) -> None:
    """The per-request options; `overrides` as for add_model_args."""
    s = _SESSION
    d = _defaults(overrides, depth=s.depth, width=s.width, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k,
                  max_tokens=s.max_tokens, max_step_tokens=s.max_step_tokens)
    p.add_argument("--depth", type=_depth, **d("depth", "g: drafted steps per cycle, or 'auto' (chosen each "
                                                        "cycle by the cost model)"))
    p.add_argument("--width", type=int, **d("width", "W: sibling drafts per position"))
    p.add_argument("--temperature", type=float, **d("temperature"))
    p.add_argument("--top-p", type=float, **d("top_p"))
    p.add_argument("--top-k", type=int, **d("top_k", "0: off"))
    p.add_argument("--max-tokens", type=int, **d("max_tokens"))
    p.add_argument("--max-step-tokens", type=int, **d("max_step_tokens"))
    p.add_argument("--seed", type=int, default=None, help="default: fresh randomness per run")
    sched = p.add_mutually_exclusive_group()
    sched.add_argument("--sync", dest="schedule", action="store_const", const="sync",
                       help=f"synchronous cycles (default {s.schedule})")
    sched.add_argument("--async", dest="schedule", action="store_const", const="async", help="the rolling window")


def _defaults(overrides: dict | None, **config_defaults):
    """argparse's default (None: take the config's) and a help text naming the default in force."""
    overrides = overrides or {}

    def d(name: str, what: str = "") -> dict:
        shown = overrides.get(name, config_defaults[name])
        return {"default": overrides.get(name), "help": f"{what}{'; ' if what else ''}default {shown}"}

    return d


def app_config_from_args(args, mode: str) -> AppConfig:
    """The AppConfig the options describe, for one mode."""
    return AppConfig.for_models(
        args.target, args.draft, args.judge, mode=mode, engine=args.engine, device=args.device, dtype=args.dtype,
        batch_invariant=args.batch_invariant, sd_tokens=args.sd_tokens,
        target_cores=getattr(args, "target_cores", None), draft_cores=getattr(args, "draft_cores", None), verifier=args.verifier,
        threshold=args.threshold, numeric_guard=False if args.no_numeric_guard else None,
        depth=args.depth, width=args.width, schedule=args.schedule, max_step_tokens=args.max_step_tokens,
        max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k)


def _depth(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"depth must be 'auto' or an integer, not {value!r}") from None
