"""`ottava`: the command line, with the sidecar's `ottava run` and `ottava operator`.

It sits above both packages so that the rule between them holds: the operator imports
the sidecar, the sidecar never imports the operator. Each package owns its command
(`ottava_sidecar.cli`, `ottava_operator.cli`); this one only puts them side by side.

`ottava run` does not import the operator's package: a sidecar's start-up pays only for
what it runs (docs/benchmarks.md). Its parser lists `operator` with the same help line,
so usage and errors read the same either way.
"""

import argparse
from collections.abc import Sequence

from ottava_sidecar import __version__, logs
from ottava_sidecar import cli as sidecar_cli

__all__ = ["build_parser", "main"]

OPERATOR_HELP = "run the operator (admission webhooks, status, certificates, sidecar RBAC)"


def build_parser(*, with_operator: bool = True) -> argparse.ArgumentParser:
    """The `ottava` parser; without the operator's flags (`with_operator=False`) for `ottava run`."""
    parser = argparse.ArgumentParser(prog="ottava", description="Ottava: a multi-runtime sidecar.")
    parser.add_argument("--version", action="version", version=f"ottava {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    sidecar_cli.add_command(commands)
    if with_operator:
        from ottava_operator import cli as operator_cli  # late: `ottava run` never loads the operator

        operator_cli.add_command(commands)
    else:
        commands.add_parser("operator", help=OPERATOR_HELP)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments, command = sidecar_cli.split_app_command(argv)
    running = next((a for a in arguments if not a.startswith("-")), None) == "run"
    args = build_parser(with_operator=not running).parse_args(arguments)
    logs.configure(args.log_level, args.log_format)
    if args.command == "run":
        return sidecar_cli.run(args, command)
    if args.command == "operator":
        from ottava_operator import cli as operator_cli

        return operator_cli.run(args)
    return 2
