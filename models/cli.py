"""The `lottery` command line."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lottery",
        description="Strong lottery tickets, exactly: prune a random network to compute a target.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    bench = sub.add_parser("bench", help="run a benchmark (tables, JSON and plots)")
    bench_sub = bench.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    from benchmarks import backends

    p = bench_sub.add_parser(
        "backends",
        help="time every installed solver backend on the same subset-sum instances",
        description=backends.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    backends.add_arguments(p)
    p.set_defaults(func=backends.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
