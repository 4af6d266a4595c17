"""Do the backends return the same float64 optimum? Random problems with m <= 20, both objectives:
the size and the float64 error of every backend's answer against the exact mitm reference
(itself checked against brute force in the tests), problem by problem.

Counted per backend and objective: problems with the same status, the same size and the same
error (relative 1e-12); problems where the backend is worse, and where it claims better than the
exact optimum (a bug if ever > 0). Writes exactness.md and exactness.json.

    lottery bench exactness                 # 10,000 problems (gurobi: 300)
    lottery bench exactness --quick         # 500 (gurobi: 50)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

import solver
from solver import Status

from .common import cli_main, command_line, machine_info, markdown_table, product_coefficients, write_outputs

REL = 1e-12


def instances(rng: np.random.Generator, count: int, m_max: int) -> tuple[np.ndarray, np.ndarray]:
    """Products of two uniforms, NaN-padded to random lengths 1..m_max; weight-like targets."""
    from .common import weight_like_targets

    c = product_coefficients(rng, count, m_max)
    lengths = rng.integers(1, m_max + 1, count)
    c[np.arange(m_max)[None, :] >= lengths[:, None]] = np.nan
    return weight_like_targets(rng, count), c


def compare(res: solver.SolveResult, ref: solver.SolveResult) -> dict[str, int]:
    n = len(res)
    same_err = np.abs(res.errors - ref.errors[:n]) <= REL * np.maximum(ref.errors[:n], 1e-300) + 1e-300
    return {
        "problems": n,
        "same_status": int((res.status == ref.status[:n]).sum()),
        "same_size": int((res.sizes == ref.sizes[:n]).sum()),
        "same_error": int(same_err.sum()),
        "all_same": int((same_err & (res.sizes == ref.sizes[:n]) & (res.status == ref.status[:n])).sum()),
        "better_than_exact": int(((res.status == Status.OPTIMAL) & (ref.status[:n] == Status.OPTIMAL)
                                  & ((res.sizes < ref.sizes[:n]) if res.info["objective"] == "min-size"
                                     else (res.errors < ref.errors[:n] * (1 - REL)))).sum()),
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="500 problems (gurobi 50): seconds")
    p.add_argument("--problems", type=int, help="problems per objective (default 10,000)")
    p.add_argument("--gurobi-problems", type=int, help="the first this many for gurobi (default 300; ~1 s each)")
    p.add_argument("--m", type=int, default=20, help="largest number of coefficients (default 20)")
    p.add_argument("--eps", type=float, default=0.01, help="min-size tolerance (default 0.01)")
    p.add_argument("--seed", type=int, default=0, help="seed of the instances (default 0)")
    p.add_argument("--out", type=Path, default=Path("bench_out/exactness"), help="output directory")


def run(args: argparse.Namespace) -> dict[str, Any]:
    count = args.problems or (500 if args.quick else 10_000)
    g_count = min(count, args.gurobi_problems or (50 if args.quick else 300))
    t, c = instances(np.random.default_rng(args.seed), count, args.m)
    backends = ["cpsat", "brute"]
    if "gurobi" in solver.available_backends():
        from solver.backends.gurobi import license_problem

        if license_problem() is None:
            backends.append("gurobi")
    rows = []
    for objective in ("min-error", "min-size"):
        ref = solver.solve(t, c, objective, eps=args.eps, backend="mitm", workers=None, presolve=False, progress=False)
        for name in backends:
            k = g_count if name == "gurobi" else count
            res = solver.solve(t[:k], c[:k], objective, eps=args.eps, backend=name, workers=None, presolve=False,
                               progress=False)
            row = {"backend": name, "objective": objective, **compare(res, ref),
                   "seconds_per_problem": res.seconds / len(res), "certificate": res.info["certificate"]}
            rows.append(row)
            print(f"{objective} {name}: {row['all_same']}/{row['problems']} identical", file=sys.stderr, flush=True)
    info = machine_info()
    md = ["# Exactness: every backend against the float64 optimum\n",
          f"Command: `{command_line()}`  \n",
          f"Machine: {info['cpu']}, {info['cores']} cores; ortools {info['ortools']}, gurobipy {info['gurobipy']}\n",
          f"\nInstances: products of two U[-1, 1], m uniform in 1..{args.m}, weight-like targets; eps = {args.eps}; "
          f"seed {args.seed}; reference: mitm (exact). 'identical' = same status, same size and the same "
          f"float64 error (relative {REL:g}).\n\n",
          markdown_table(["backend", "objective", "problems", "identical", "same size", "same error", "same status",
                          "better than exact", "time / problem"],
                         [[r["backend"], r["objective"], r["problems"], r["all_same"], r["same_size"], r["same_error"],
                           r["same_status"], r["better_than_exact"], f"{1e3 * r['seconds_per_problem']:.2f} ms"]
                          for r in rows])]
    payload = {"machine": info, "command": command_line(), "rows": rows, "eps": args.eps, "m": args.m, "seed": args.seed}
    paths = write_outputs(args.out, "exactness", payload, "".join(md))
    print("".join(md))
    print(f"wrote {paths['md']}, {paths['json']}")
    return payload


def main(argv: list[str] | None = None) -> None:
    cli_main("lottery bench exactness", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    main()
