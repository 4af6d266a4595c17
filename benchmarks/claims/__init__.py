"""`lottery claims <name>`: test the paper's claims with exact computations (see docs/benchmarks.md, "Testing the theory").

* ``subset-sum``: random subset sum with high probability. For U[-1, 1], the construction's
  products and Experiment 1's coefficients: the exact sup error over targets in [-1, 1], the
  smallest m with P(sup error <= eps) >= 1 - delta certified by Clopper-Pearson intervals (3000
  seeds at every m), range and resolution failures apart, fits of m against log2(1/eps) with
  intervals, the slope of log2(median sup error) per coefficient.
* ``lower-bound``: the tight optimum 1/(2^m - 1) (0 is always a subset sum), attained by signed
  geometric sets and beaten by no set tried; the d x d counting bound as the theorem states it
  (one random network for every target of the operator-norm ball; total parameters).
* ``width``: the theorem's units (spectral norm 1 targets, inputs of norm <= 1, one random network
  per cell, 10 targets per cell, trivial targets excluded): the smallest n against log2 d, log2 l
  and log2(1/eps) in one multivariate fit with R^2, the certified bound's looseness, Malach et al.'s
  d^4 l^2 beside the random width.
* ``coverage``: the construction's per-weight failure probability against n at Experiment 1's eps,
  and what it says about covering all 397,000 weights at n = 21.

Every command writes NAME.json, NAME.md and NAME.png into --out and prints one verdict line
that states what was measured, with intervals. ``--quick`` runs in seconds (the tests use it),
says it is indicative and fits nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from ..common import cli_main, command_line, write_outputs
from .coverage import claim_coverage
from .lower_bound import claim_lower_bound
from .subset_sum import claim_subset_sum
from .width import claim_width

CLAIMS = {"subset-sum": claim_subset_sum, "lower-bound": claim_lower_bound, "width": claim_width,
          "coverage": claim_coverage}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", choices=list(CLAIMS) + ["all"], help="which claim to test")
    p.add_argument("--quick", action="store_true", help="small ranges (seconds); the full mode takes minutes")
    p.add_argument("--seed", type=int, default=0, help="seed of the random coefficient sets and targets (default 0)")
    p.add_argument("--out", type=Path, default=Path("bench_out/claims"),
                   help="directory for NAME.json, NAME.md and NAME.png (default bench_out/claims)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    args.out.mkdir(parents=True, exist_ok=True)
    names = list(CLAIMS) if args.name == "all" else [args.name]
    results = {}
    for name in names:
        start = time.perf_counter()
        res = CLAIMS[name](args)
        res["seconds"] = time.perf_counter() - start
        md = res.pop("markdown") + f"\nTime: {res['seconds']:.1f} s\n"
        write_outputs(args.out, name, {"claim": name, "command": command_line(), "seed": args.seed, "quick": args.quick, **res}, md)
        print(res["verdict"])
        print(f"  ({res['seconds']:.1f} s; wrote {args.out / (name + '.md')}, .json, .png)", file=sys.stderr)
        results[name] = res
    return results


def main(argv: list[str] | None = None) -> None:
    cli_main("lottery claims", __doc__, add_arguments, run, argv)
