"""`lottery bench ...` and `lottery claims ...`, registered with the `lottery` command through the
``lottery.commands`` entry-point group (see pyproject.toml), so ``models`` never imports this package."""

from __future__ import annotations

import argparse
import sys

from models.errors import LotteryError


def _command(run):
    """Benchmarks return their payload; the command's exit status is 0 once the files are written,
    2 with a one-line error for a bad option (any other exception is a bug, reported by the
    ``lottery`` command as one)."""

    def command(args: argparse.Namespace) -> int:
        try:
            run(args)
        except LotteryError as exc:  # a message meant for the user (SolverInputError included)
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0

    return command


def _add(sub, name: str, module, help: str) -> None:
    p = sub.add_parser(name, help=help, description=module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(p)
    p.set_defaults(func=_command(module.run))


def register(sub: argparse._SubParsersAction) -> None:
    """Add `claims` and `bench BENCHMARK` to the `lottery` command's subparsers."""
    from . import (backends, certificates, claims, coldstart, exactness, exp1, exp2, layouts, scale, solve_phase,
                   survey, verification, zoo)

    _add(sub, "claims", claims, "test the paper's subset-sum, lower-bound and width claims")
    bench = sub.add_parser("bench", help="run a benchmark (tables, JSON and plots)")
    bench_sub = bench.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    _add(bench_sub, "backends", backends, "time every installed solver backend on the same subset-sum instances")
    _add(bench_sub, "certificates", certificates, "trained MLP and LeNet-5 tickets: eps coverage, accuracy, "
         "certified bound vs adversarial error, kept count")
    _add(bench_sub, "coldstart", coldstart, "import + first solve in a fresh process, with and without numba's cache")
    _add(bench_sub, "exp1", exp1, "the paper's Experiment 1 (784-500-10 MLP, n = 21, eps = 0.01) at full scale")
    _add(bench_sub, "exp2", exp2, "the paper's Experiment 2: edge-popup in redundant and wide random networks "
         "against constructed tickets")
    _add(bench_sub, "exactness", exactness, "every backend against the float64 optimum, problem by problem")
    _add(bench_sub, "layouts", layouts, "how often a weight's exact optimum misses eps: random vs balanced product signs")
    _add(bench_sub, "solve-phase", solve_phase, "Experiment 1's MLP: the construction's solve phase against one "
         "bare solver.solve call on its problems")
    _add(bench_sub, "verification", verification, "a LeNet-5 or CIFAR ResNet-20 ticket verified: seconds by phase, against the solve time")
    _add(bench_sub, "zoo", zoo, "torchvision models, a transformer encoder and Hugging Face models: built or "
         "refused (the op named), errors, time, memory (needs torchvision)")
    _add(bench_sub, "survey", survey, "every torchvision classification model traced: traced or refused (the op "
         "named), nothing solved (needs torchvision)")
    _add(bench_sub, "scale", scale, "bounded memory on a 10M-weight target; Dask overhead on Experiment 1")
