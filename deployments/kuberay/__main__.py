"""`python -m deployments.kuberay render [--check]` / `manifest`: the same as `lookahead k8s`."""
from __future__ import annotations

import argparse
import sys

from deployments.kuberay.render import add_subcommands


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.kuberay", description=__doc__.split("\n")[0])
    parser.set_defaults(func=lambda args: parser.print_help() or 2)
    add_subcommands(parser.add_subparsers(dest="k8s_command"))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
