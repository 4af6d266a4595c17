"""The `lottery` command line: `solve` and `verify` here, more commands from plug-ins.

Other packages add subcommands through the ``lottery.commands`` entry-point group: each entry
is a function ``register(subparsers)`` that adds its parsers and sets ``func`` (returning the
exit status). This project's benchmarks package registers `lottery bench` and `lottery claims`
that way, so the import graph stays one-way: benchmarks -> models -> solver.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points

from . import commands

PLUGIN_GROUP = "lottery.commands"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lottery",
        description="Strong lottery tickets, exactly: prune a random network to compute a target.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("solve", help="construct, verify and save the pruned random network for a target",
                       description=commands.SOLVE_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands.add_solve_arguments(p)
    p.set_defaults(func=commands.run_solve)
    p = sub.add_parser("verify", help="rebuild a saved ticket, check it is bit-exact and re-verify it",
                       description=commands.run_verify.__doc__)
    commands.add_verify_arguments(p)
    p.set_defaults(func=commands.run_verify)
    for entry in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
        entry.load()(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit status (2 for bad arguments, as argparse)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or argparse's one-line error already printed
        return int(exc.code or 0)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
