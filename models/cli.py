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

from solver import LotteryError

from . import commands
from .collapsed import FormMismatchError

PLUGIN_GROUP = "lottery.commands"


def _debug_flag() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the Python traceback of an error (otherwise one line)")
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lottery",
        description="Strong lottery tickets, exactly: prune a random network to compute a target.",
        parents=[_debug_flag()],
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("solve", help="construct, verify and save the pruned random network for a target",
                       description=commands.SOLVE_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
                       parents=[_debug_flag()])
    commands.add_solve_arguments(p)
    p.set_defaults(func=commands.run_solve)
    p = sub.add_parser("verify", help="rebuild a saved ticket, check it is bit-exact and re-verify it",
                       description=commands.run_verify.__doc__, parents=[_debug_flag()])
    commands.add_verify_arguments(p)
    p.set_defaults(func=commands.run_verify)
    for entry in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
        entry.load()(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit status: 0 done, 1 a check failed, 2 an error of the input or
    of the machine (said in one line), 3 a bug of the tool (one line; ``--debug`` shows the
    traceback), 130 interrupted."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or argparse's one-line error already printed
        return int(exc.code or 0)
    debug = getattr(args, "debug", False)
    try:
        return int(args.func(args) or 0)
    except LotteryError as exc:  # errors meant for the user: what was received, what is expected
        if debug:
            raise
        print(f"error: {commands.flags_in(str(exc))}", file=sys.stderr)
        return 2
    except FormMismatchError as exc:  # a check of the tool itself failed: a bug, exit 1
        if debug:
            raise
        print(f"check failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; the chunks solved so far are kept in the run directory: rerun the same command "
              "to resume", file=sys.stderr)
        return 130
    except (MemoryError, OSError) as exc:  # the machine: memory, disk, permissions, a missing file
        if debug:
            raise
        print(f"error: {describe_failure(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - anything else is a bug of the tool: one line, never a traceback
        if debug:
            raise
        print(f"internal error (a bug of the tool, please report it with the command): {describe_failure(exc)} "
              f"(run with --debug for the traceback)", file=sys.stderr)
        return 3


def describe_failure(exc: BaseException) -> str:
    """One line for an error that is not a :class:`solver.LotteryError`: what failed and why."""
    if isinstance(exc, MemoryError):
        return ("out of memory: the run needs more memory than is available; use a smaller --n, "
                "--variant fanout, a smaller --block-problems, or a machine with more memory")
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else 'no message'}"


if __name__ == "__main__":
    sys.exit(main())
