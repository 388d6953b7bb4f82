"""`ottava`: the command line, with the sidecar's `ottava run` and `ottava operator`.

It sits above both packages so that the rule between them holds: the operator imports
the sidecar, the sidecar never imports the operator. Each package owns its command
(`ottava_sidecar.cli`, `ottava_operator.cli`); this one only puts them side by side.
"""

import argparse
from collections.abc import Sequence

from ottava_operator import cli as operator_cli
from ottava_sidecar import __version__, logs
from ottava_sidecar import cli as sidecar_cli

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ottava", description="Ottava: a multi-runtime sidecar.")
    parser.add_argument("--version", action="version", version=f"ottava {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    sidecar_cli.add_command(commands)
    operator_cli.add_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments, command = sidecar_cli.split_app_command(argv)
    args = build_parser().parse_args(arguments)
    logs.configure(args.log_level, args.log_format)
    if args.command == "run":
        return sidecar_cli.run(args, command)
    if args.command == "operator":
        return operator_cli.run(args)
    return 2
