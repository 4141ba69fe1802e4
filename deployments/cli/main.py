"""`lookahead` command line: generate (here), models, serve, demo, bench, k8s (their own modules)."""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys

# Never reach for a hub at run time; models come from the local cache (`lookahead models prepare`).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Logs are not output: vLLM's logger writes to stdout unless told otherwise.
os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")

from deployments.cli.args import add_lookahead_args, add_model_args, app_config_from_args  # noqa: E402
from deployments.config import LookaheadDefaults  # noqa: E402
from orchestrator.modes import MODES  # noqa: E402


def cmd_generate(args) -> int:
    if not args.json:
        return _generate(args)
    # One JSON document on stdout, whatever the engines print: while they run, file descriptor 1
    # (Python, C extensions, vLLM's engine-core processes, which inherit it) points at stderr.
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        result: dict = {}
        code = _generate(args, result)
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
    if code == 0:
        print(json.dumps(result, ensure_ascii=False), flush=True)
    return code


def _generate(args, out: dict | None = None) -> int:
    """Answer the prompt; print the steps as they come, or fill `out` with the JSON result."""
    from deployments.api.request import RequestOptions
    from deployments.model_cache import ModelNotAvailable
    from deployments.pipeline import Pipeline, lookahead_params
    from orchestrator.lookahead import Lookahead
    from orchestrator.stop_strings import StopStrings
    from orchestrator.types import Prompt

    try:
        stops = StopStrings(args.stop)
        cfg = app_config_from_args(args, args.mode)
        pipe = Pipeline.build(cfg)
    except (ModelNotAvailable, ValueError) as exc:
        print(f"lookahead: {exc}", file=sys.stderr)
        return 2
    prompt = Prompt(text=args.prompt) if args.raw else Prompt(messages=[{"role": "user", "content": args.prompt}])
    params = lookahead_params(cfg.defaults, RequestOptions(seed=args.seed),
                              token_speculation=cfg.target.engine.token_speculation)
    session = Lookahead(pipe.target, pipe.draft, pipe.verifier, prompt, params, "cli")

    def show(pieces) -> None:
        if out is None:
            for p in pieces:
                print(_mark(p.step, p.text) if p.first else p.text, end="", flush=True)

    async def run():
        stream = session.stream()
        try:
            async for steps in stream:
                show(stops.feed(steps))
                if stops.stopped:
                    break  # a stop string: the session ends here (closing the stream cancels it)
        finally:
            await stream.aclose()
        show(stops.finish())

    try:
        asyncio.run(run())
    finally:
        for engine in {id(e): e for e in (pipe.target, pipe.draft, pipe.judge) if e is not None}.values():
            engine.close()  # vLLM's engine core says goodbye now, not at interpreter exit
    result = stops.result(session.result())
    if out is not None:
        out.update(result.to_dict())
    else:
        print()
        print(_summary(result.stats.to_dict()))
    return 0


def _mark(step, text: str | None = None) -> str:
    text = step.text if text is None else text
    tag = "draft ✓" if step.source == "draft" else "target"
    if sys.stdout.isatty():
        colour = "32" if step.source == "draft" else "34"
        return f"\x1b[{colour}m[{tag}]\x1b[0m {text}"
    return f"[{tag}] {text}"


def _summary(st: dict) -> str:
    return (f"-- mode={st['mode']} cycles={st['cycles']} steps: accepted drafts={st['accepted_steps']} "
            f"target={st['target_steps']} (drafted {st['drafted_steps']}, acceptance {st['acceptance_rate']:.2f}, "
            f"by depth {st['acceptance_by_depth']}) tokens={st['tokens']} wall={st['wall_s']:.2f}s "
            f"[draft {st['draft_s']:.2f}s target {st['target_s']:.2f}s verify {st['verify_s']:.2f}s]"
            + (f" degraded={st['degraded']}" if st["degraded"] else ""))


def version() -> str:
    """The installed distribution's version (pyproject's), or "unknown" when run from a checkout
    that was never installed."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("lookahead")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lookahead", description=__doc__)
    parser.add_argument("--version", action="version", version=f"lookahead {version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="answer one prompt in-process, step by step")
    g.add_argument("prompt")
    g.add_argument("--mode", choices=MODES, default=None, help=f"default {LookaheadDefaults().mode}")
    g.add_argument("--json", action="store_true", help="print one JSON object")
    g.add_argument("--raw", action="store_true", help="send the prompt as-is, without the chat template")
    g.add_argument("--stop", action="append", default=None, metavar="TEXT",
                   help="stop string (repeatable): the answer ends before the first one")
    add_model_args(g)
    add_lookahead_args(g)
    g.set_defaults(func=cmd_generate)

    from deployments.cli import models

    models.add_cli(sub)
    _optional_cli(sub)
    return parser


def _optional_cli(sub) -> None:
    """Sub-commands whose modules need the serve extras; registered when importable."""
    for load in (_serve_cli, _k8s_cli, _bench_cli):
        try:
            module = load()
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] in ("deployments", "benchmarks", "orchestrator", "verifier"):
                raise  # our own code is broken: say so
            continue  # an optional dependency (ray[serve], grpcio, ...) is not installed
        module.add_cli(sub)


# Plain imports (not importlib by name) so the import-layer test sees these edges too.
def _serve_cli():
    from deployments.cli import serve

    return serve


def _k8s_cli():
    from deployments.cli import k8s

    return k8s


def _bench_cli():
    from deployments.cli import bench

    return bench


def main(argv: list[str] | None = None) -> int:
    from deployments.cli import shutdown

    args = build_parser().parse_args(argv)
    try:
        with shutdown.sigterm_as_interrupt():
            return args.func(args)
    except KeyboardInterrupt:
        # the command's finally blocks have run (its engines closed); no traceback for a stop asked for
        name = signal.Signals(shutdown.stopped_by).name
        shutdown.say(f"stopped by {name}")
        return 128 + shutdown.stopped_by


if __name__ == "__main__":
    sys.exit(main())
