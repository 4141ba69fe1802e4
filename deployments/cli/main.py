"""`lookahead` command line: generate, models, serve, demo, bench, k8s."""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

# Never reach for a hub at run time; models come from the local cache (`lookahead models prepare`).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DEFAULT_TARGET = "qwen2.5-0.5b"
DEFAULT_DRAFT = "smollm2-135m"
MODES = ("ar", "sd", "lr", "lr+sd")
VERIFIERS = ("exact", "normalized", "embedding", "llm-judge", "target-score")


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default=DEFAULT_TARGET, help="target model: short name, path or cached hub id")
    p.add_argument("--draft", default=DEFAULT_DRAFT, help="draft model")
    p.add_argument("--judge", default=None, help="judge model for --verifier llm-judge")
    p.add_argument("--engine", choices=("hf", "vllm"), default="hf")
    p.add_argument("--verifier", choices=VERIFIERS, default="exact")
    p.add_argument("--threshold", type=float, default=None, help="verifier threshold (per-kind default)")
    p.add_argument("--no-numeric-guard", action="store_true", help="embedding verifier without the guard")
    p.add_argument("--sd-tokens", type=int, default=4, help="token-level speculative tokens in sd modes")
    p.add_argument("--batch-invariant", action="store_true",
                   help="hf engine: run batch rows one by one (bit-identical greedy results)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")


def add_lookahead_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--depth", type=int, default=4, help="g: drafted steps per cycle")
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
                          num_speculative_tokens=args.sd_tokens, **common)
    speculate = mode.startswith("lr")
    return AppConfig(
        target=RoleConfig(engine=target),
        draft=RoleConfig(engine=EngineConfig(model=args.draft, **common)) if speculate else None,
        judge=RoleConfig(engine=EngineConfig(model=args.judge, **common)) if speculate and args.judge else None,
        verifier=VerifierConfig(kind=args.verifier, threshold=args.threshold,
                                numeric_guard=not args.no_numeric_guard),
        defaults=LookaheadDefaults(mode=mode, depth=args.depth, width=args.width, schedule=args.schedule,
                                   max_step_tokens=args.max_step_tokens, max_tokens=args.max_tokens,
                                   temperature=args.temperature, top_p=args.top_p, top_k=args.top_k),
    )


def cmd_generate(args) -> int:
    from deployments.models import ModelNotAvailable
    from deployments.pipeline import Pipeline, lookahead_params
    from orchestrator.lookahead import Lookahead
    from orchestrator.types import Prompt

    try:
        cfg = app_config_from_args(args, args.mode)
        pipe = Pipeline.build(cfg)
    except (ModelNotAvailable, ValueError) as exc:
        print(f"lookahead: {exc}", file=sys.stderr)
        return 2
    prompt = Prompt(text=args.prompt) if args.raw else Prompt(messages=[{"role": "user", "content": args.prompt}])
    params = lookahead_params(cfg.defaults, seed=args.seed)
    session = Lookahead(pipe.target, pipe.draft, pipe.verifier, prompt, params, "cli")

    async def run():
        async for steps in session.stream():
            if not args.json:
                for s in steps:
                    print(_mark(s), end="", flush=True)

    asyncio.run(run())
    result = session.result()
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
    else:
        print()
        print(_summary(result.stats.to_dict()))
    return 0


def _mark(step) -> str:
    tag = "draft ✓" if step.source == "draft" else "target"
    if sys.stdout.isatty():
        colour = "32" if step.source == "draft" else "34"
        return f"\x1b[{colour}m[{tag}]\x1b[0m {step.text}"
    return f"[{tag}] {step.text}"


def _summary(st: dict) -> str:
    return (f"-- mode={st['mode']} cycles={st['cycles']} steps: accepted drafts={st['accepted_steps']} "
            f"target={st['target_steps']} (drafted {st['drafted_steps']}, acceptance {st['acceptance_rate']:.2f}, "
            f"by depth {st['acceptance_by_depth']}) tokens={st['tokens']} wall={st['wall_s']:.2f}s "
            f"[draft {st['draft_s']:.2f}s target {st['target_s']:.2f}s verify {st['verify_s']:.2f}s]"
            + (f" degraded={st['degraded']}" if st["degraded"] else ""))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lookahead", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="answer one prompt in-process, step by step")
    g.add_argument("prompt")
    g.add_argument("--mode", choices=MODES, default="lr")
    g.add_argument("--json", action="store_true", help="print one JSON object")
    g.add_argument("--raw", action="store_true", help="send the prompt as-is, without the chat template")
    add_model_args(g)
    add_lookahead_args(g)
    g.set_defaults(func=cmd_generate)

    from deployments import models

    models.add_cli(sub)
    _optional_cli(sub)
    return parser


def _optional_cli(sub) -> None:
    """Sub-commands whose modules need the serve extras; registered when importable."""
    import importlib

    for name in ("deployments.serve_cli", "deployments.kuberay", "benchmarks.bench"):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] in ("deployments", "benchmarks", "orchestrator", "verifier"):
                raise  # our own code is broken: say so
            continue  # an optional dependency (ray[serve], grpcio, ...) is not installed
        module.add_cli(sub)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
