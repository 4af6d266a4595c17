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
    from . import commands

    p = sub.add_parser("solve", help="construct, verify and save the pruned random network for a target",
                       description=commands.SOLVE_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands.add_solve_arguments(p)
    p.set_defaults(func=commands.run_solve)
    p = sub.add_parser("verify", help="rebuild a saved ticket, check it is bit-exact and re-verify it",
                       description=commands.run_verify.__doc__)
    commands.add_verify_arguments(p)
    p.set_defaults(func=commands.run_verify)

    from benchmarks import claims

    p = sub.add_parser("claims", help="test the paper's subset-sum, lower-bound and width claims",
                       description=claims.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    claims.add_arguments(p)
    p.set_defaults(func=_benchmark(claims.run))

    bench = sub.add_parser("bench", help="run a benchmark (tables, JSON and plots)")
    bench_sub = bench.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    from benchmarks import backends, exp1, scale

    p = bench_sub.add_parser(
        "backends",
        help="time every installed solver backend on the same subset-sum instances",
        description=backends.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    backends.add_arguments(p)
    p.set_defaults(func=_benchmark(backends.run))
    p = bench_sub.add_parser("exp1", help="the paper's Experiment 1 (784-500-10 MLP, n = 21, eps = 0.01) at full scale",
                             description=exp1.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    exp1.add_arguments(p)
    p.set_defaults(func=_benchmark(exp1.run))
    p = bench_sub.add_parser("scale", help="bounded memory on a 10M-weight target; Dask overhead on Experiment 1",
                             description=scale.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    scale.add_arguments(p)
    p.set_defaults(func=_benchmark(scale.run))
    return parser


def _benchmark(run):
    """Benchmarks return their payload; the command's exit status is 0 once the files are written."""

    def command(args: argparse.Namespace) -> int:
        run(args)
        return 0

    return command


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code = args.func(args)
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
