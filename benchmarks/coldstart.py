"""First-call cost: a fresh Python process that imports `solver` and solves one batch.

Each repeat starts a new interpreter that imports ``solver``, solves ``--problems`` random
min-size (eps 0.01) and min-error problems with m = ``--m`` coefficients on one worker with the
``mitm`` backend, then solves the same batch again. Two states of numba's on-disk cache:

* ``compiled before`` - the kernels compiled by an earlier process (every run after the first);
* ``empty cache`` - the first run after installation: numba compiles the kernels (a fresh
  ``NUMBA_CACHE_DIR`` per repeat) and writes them to the cache.

Reports the median over repeats of: the import, the first call, import + first call, the second
call. Writes coldstart.md and coldstart.json.

    lottery bench coldstart               # 5 repeats per state
    lottery bench coldstart --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import LotteryError, UsageError

from .common import cli_main, command_line, format_seconds, machine_info, markdown_table, write_outputs

GOAL_SECONDS = 1.0  # import + first call of 400 problems, kernels compiled before

_CHILD = """
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import solver
t1 = time.perf_counter()
problems, m, objective = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rng = np.random.default_rng(0)
c = rng.uniform(-1, 1, (problems, m)) * rng.uniform(-1, 1, (problems, m))
t = np.clip(rng.normal(0, 0.25, problems), -1, 1)
kw = dict(objective=objective, eps=0.01 if objective == "min-size" else None, backend="mitm", workers=1,
          progress=False)
solver.solve(t, c, **kw)
t2 = time.perf_counter()
solver.solve(t, c, **kw)
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "first_call": t2 - t1, "total": t2 - t0, "second_call": t3 - t2}))
"""


def measure(problems: int, m: int, objective: str, cache_dir: str) -> dict[str, float]:
    """One fresh interpreter; the numba cache in ``cache_dir``."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(problems), str(m), objective], env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise LotteryError(f"the measuring process failed (exit {proc.returncode}): {proc.stderr.strip()[-400:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repeats", type=int, default=5, help="fresh processes per state and objective (default 5)")
    p.add_argument("--problems", type=int, default=400, help="problems in the batch (default 400)")
    p.add_argument("--m", type=int, default=21, help="coefficients per problem (default 21)")
    p.add_argument("--out", type=Path, default=Path("bench_out/coldstart"), help="output directory")


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.repeats < 1 or args.problems < 1 or not 1 <= args.m <= 40:
        raise UsageError(f"need --repeats >= 1, --problems >= 1 and 1 <= --m <= 40; got {args.repeats}, "
                         f"{args.problems}, {args.m}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="lottery-numba-") as warm:
        for objective in ("min-size", "min-error"):
            measure(args.problems, args.m, objective, warm)  # fills the shared cache
            for state in ("compiled before", "empty cache"):
                runs = []
                for _ in range(args.repeats):
                    if state == "empty cache":
                        with tempfile.TemporaryDirectory(prefix="lottery-numba-") as empty:
                            runs.append(measure(args.problems, args.m, objective, empty))
                    else:
                        runs.append(measure(args.problems, args.m, objective, warm))
                row = {"objective": objective, "cache": state, "repeats": args.repeats}
                for key in ("import", "first_call", "total", "second_call"):
                    row[key] = float(np.median([r[key] for r in runs]))
                    row[f"{key}_all"] = [r[key] for r in runs]
                rows.append(row)
    headers = ["objective", "numba cache", "import", "first call", "import + first call", "second call"]
    table = [[r["objective"], r["cache"], format_seconds(r["import"]), format_seconds(r["first_call"]),
              format_seconds(r["total"]), format_seconds(r["second_call"])] for r in rows]
    goal_rows = [r for r in rows if r["cache"] == "compiled before" and r["objective"] == "min-size"]
    met = all(r["total"] <= GOAL_SECONDS for r in goal_rows)
    md = [
        f"# First solve in a fresh process: {args.problems} problems, m = {args.m}, mitm, one worker\n\n",
        f"Machine: {machine_info()['cpu']}, {machine_info()['cores']} cores. Command: `{command_line()}`. "
        f"Median of {args.repeats} fresh processes per row.\n\n",
        markdown_table(headers, table),
        f"\nGoal: import + first min-size call <= {GOAL_SECONDS:g} s with the kernels compiled before: "
        f"{'met' if met else 'NOT met'}. The empty-cache rows are the first run after installation (numba "
        f"compiles the kernels once and caches them).\n",
    ]
    payload = {"machine": machine_info(), "command": command_line(), "problems": args.problems, "m": args.m,
               "goal_seconds": GOAL_SECONDS, "goal_met": met, "rows": rows}
    paths = write_outputs(args.out, "coldstart", payload, "".join(md))
    print("".join(md))
    print(f"wrote {paths['md']}, {paths['json']}")
    return payload


def main(argv: list[str] | None = None) -> None:
    cli_main("lottery bench coldstart", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    main()
