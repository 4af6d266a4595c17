"""The solve phase against the bare solver: what the construction adds to solving its problems.

On Experiment 1's MLP (784-500-10, trained on digits upsampled to 28x28, cached; n = 21, eps = 0.01,
min-error, backend auto, every core: `lottery solve`'s defaults), each repeat times

* the solve phase of :func:`models.construct.construct` (tracing, memory plan, regenerating the
  random values block by block, building the problems, solving, packing the masks): the report's
  "solve" seconds;
* one bare :func:`solver.solve` call on the same problems (built beforehand, not timed) with the
  same options and cores.

Goal: solve phase <= 1.3 x the bare call (median of the repeats, taken alternately in one
process). ``--profile`` adds the solve phase's cProfile: the functions with the most own time.
Writes solve_phase.md/.json.

    lottery bench solve-phase                 # 3 repeats
    lottery bench solve-phase --profile
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from models.errors import UsageError

from .common import cli_main, command_line, machine_info, markdown_table, write_outputs

GOAL_RATIO = 1.3
PROFILE_ROWS = 12


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repeats", type=int, default=3, help="timed pairs (default 3; the median is reported)")
    p.add_argument("--hidden", type=int, default=500, help="hidden width of the 784-H-10 MLP (default 500)")
    p.add_argument("--n", type=int, default=21, help="coefficients per problem (default 21)")
    p.add_argument("--profile", action="store_true", help="also profile one solve phase (cProfile)")
    p.add_argument("--out", type=Path, default=Path("bench_out/solve_phase"), help="output directory")


def _problems(c) -> tuple[Any, Any, Any]:
    """Every problem of the construction, built as the solve phase builds them."""
    import numpy as np

    from models.auto_n import row_blocks
    from models.problems import build_problems
    from models.random_net import stream

    parts = []
    for layer, spec in zip(c.layers, c.specs):
        blocks = row_blocks(spec, c.options.block_problems)
        for rows, values in zip(blocks, stream(spec, blocks)):
            parts.append(build_problems(layer, spec, values, rows)[:3])
    width = max(p[1].shape[1] for p in parts)
    coeffs = np.concatenate([np.pad(p[1], ((0, 0), (0, width - p[1].shape[1]))) for p in parts])
    return np.concatenate([p[0] for p in parts]), coeffs, np.concatenate([p[2] for p in parts])


def _profile(construct_once) -> list[list[str]]:
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    construct_once()
    prof.disable()
    stats = pstats.Stats(prof)
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:PROFILE_ROWS]  # own time
    return [[f"{Path(f).name}:{line} {name}", f"{st[2]:.2f}", f"{st[3]:.2f}", str(st[1])]
            for (f, line, name), st in rows]


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.repeats < 1 or args.n < 1 or args.hidden < 1:
        raise UsageError(f"need --repeats, --n and --hidden >= 1; got {args.repeats}, {args.n}, {args.hidden}")
    import solver
    from models.construct import ConstructOptions, construct

    from .exp1 import exp1_network

    target = exp1_network(args.hidden)
    options = ConstructOptions.from_kwargs(n=args.n, eps=0.01, progress=False)

    def construct_once():
        return construct(target, (784,), (0.0, 1.0), options)

    rows, runs = [], []
    problems = None
    for r in range(args.repeats):
        c = construct_once()
        if problems is None:
            problems = _problems(c)
        targets, coeffs, lengths = problems
        start = time.perf_counter()
        res = solver.solve(targets, coeffs, lengths=lengths, backend=options.backend, **vars(options.solve))
        bare = time.perf_counter() - start
        phase = c.seconds["solve"]
        runs.append({"solve_phase_seconds": phase, "bare_seconds": bare, "ratio": phase / bare, "problems": len(res)})
        rows.append([str(r + 1), f"{phase:.2f}", f"{bare:.2f}", f"{phase / bare:.3f}"])
    median = {k: statistics.median(run[k] for run in runs) for k in ("solve_phase_seconds", "bare_seconds", "ratio")}
    rows.append(["**median**", f"**{median['solve_phase_seconds']:.2f}**", f"**{median['bare_seconds']:.2f}**",
                 f"**{median['ratio']:.3f}**"])
    met = median["ratio"] <= GOAL_RATIO
    info = machine_info()
    profile = _profile(construct_once) if args.profile else None
    md = (f"# Solve phase vs one bare solver.solve call: 784-{args.hidden}-10 MLP, n = {args.n}\n\n"
          f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}. Command: `{command_line()}`.\n"
          f"{runs[0]['problems']:,} problems, min-error, backend {options.backend}, every core (workers None). "
          f"Seconds per repeat (each: one construction, then one bare call on the same problems):\n\n"
          + markdown_table(["repeat", "solve phase s", "bare solver.solve s", "ratio"], rows)
          + f"\nGoal: solve phase <= {GOAL_RATIO:g} x the bare call: {'met' if met else 'NOT met'} "
          f"(median ratio {median['ratio']:.3f}).\n")
    if profile:
        md += ("\nProfile of one solve phase (cProfile; the functions with the most own time):\n\n"
               + markdown_table(["function", "own s", "cumulative s", "calls"], profile))
    payload = {"machine": info, "command": command_line(), "hidden": args.hidden, "n": args.n,
               "repeats": args.repeats, "runs": runs, "median": median, "goal_ratio": GOAL_RATIO, "goal_met": met,
               "profile": profile}
    paths = write_outputs(args.out, "solve_phase", payload, md)
    print(md)
    print(f"wrote {paths['md']}, {paths['json']}")
    return payload


def main(argv: list[str] | None = None) -> None:
    cli_main("lottery bench solve-phase", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    main()
