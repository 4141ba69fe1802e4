"""`lookahead bench {run, merge, gpu, verifiers, load}`: the benchmarks, from the one command line.

`run` composes the shared model and sampling options (deployments/cli/args.py) with the
benchmark's own (benchmarks.bench.run); the others hand their arguments to the benchmark's own
parser, so `lookahead bench gpu --help` shows the GPU benchmark's options.
"""
from __future__ import annotations

import argparse
import importlib

from deployments.cli.args import add_lookahead_args, add_model_args

#: subcommand -> (benchmark module with main(argv), what it measures)
FORWARDED = {
    "merge": ("benchmarks.bench.merge", "one report from the bench.json parts of a time-boxed run"),
    "gpu": ("benchmarks.gpu.gpu_bench", "GPU: static decode vs the bandwidth bound, replayed LR vs the cost model"),
    "verifiers": ("benchmarks.verifiers.verifier_eval", "each verifier's precision and recall on the labelled step pairs"),
    "load": ("benchmarks.serving.loadtest", "concurrent streaming clients (HTTP and gRPC) against the Serve app"),
}


def add_cli(subparsers) -> argparse.ArgumentParser:
    from benchmarks.bench import run as bench

    parser = subparsers.add_parser("bench", help="benchmarks: run, merge, gpu, verifiers, load")
    parser.set_defaults(func=lambda args: parser.print_help() or 2)
    sub = parser.add_subparsers(dest="bench_command")
    run = sub.add_parser("run", help="ar / sd / lr / lr+sd on GSM8K: accuracy, speed, the cost model",
                         description=bench.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_arguments(run)
    add_model_args(run, bench.defaults())
    add_lookahead_args(run, bench.defaults())
    run.set_defaults(**bench.defaults())
    for name, (module, help_) in FORWARDED.items():
        p = sub.add_parser(name, help=help_, add_help=False, prefix_chars="\0")  # every argument goes through
        p.add_argument("argv", nargs=argparse.REMAINDER)
        p.set_defaults(func=_forward(module))
    return parser


def _forward(module: str):
    def run(args) -> int:
        return importlib.import_module(module).main(args.argv)

    return run
