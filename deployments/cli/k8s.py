"""`lookahead k8s`: render the committed manifests, or make one for any config."""
from __future__ import annotations

import argparse

from deployments.kuberay.render import add_subcommands


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register ``k8s render [--check]`` and ``k8s manifest`` (each sets ``func(args) -> int``)."""
    parser = subparsers.add_parser("k8s", help="KubeRay manifests: render the committed ones, or make one")
    parser.set_defaults(func=lambda args: parser.print_help() or 2)
    add_subcommands(parser.add_subparsers(dest="k8s_command"))
    return parser
