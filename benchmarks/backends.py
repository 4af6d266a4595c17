"""Benchmark every installed solver backend on the same subset-sum instances.

For each m and objective: time per problem (median of repeats), agreement with the exact
reference (mitm), problems where a backend claims better than the exact optimum (must be 0),
status counts, and the speed ratio to mitm in the same run. Writes backends.md, backends.json
and backends.png.

    lottery bench backends                 # full run (minutes)
    lottery bench backends --quick         # seconds, small m
    python -m benchmarks.backends --m 21 --objectives min-size --backends cpsat mitm
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import solver
from solver import Status

from models.errors import UsageError

from .common import (
    cli_main,
    command_line,
    format_seconds,
    machine_info,
    markdown_table,
    new_figure,
    product_coefficients,
    save_figure,
    weight_like_targets,
    write_outputs,
)

DEFAULT_M = [8, 12, 16, 21, 24, 28]
QUICK_M = [8, 12]
OBJECTIVES = ["min-error", "min-size"]


@dataclass
class Config:
    """One way of running a backend in the table."""

    label: str
    backend: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    max_m: int = 64
    max_count: int = 20000


def configs(cores: int) -> list[Config]:
    import torch

    out = [
        Config(f"mitm numba {cores} cores", "mitm", {"workers": cores}),
        Config("mitm numba 1 core", "mitm", {"workers": 1}),
        Config("mitm torch CPU", "mitm", {"engine": "torch"}, max_m=28, max_count=5000),
    ]
    if torch.cuda.is_available():
        out.append(Config("mitm torch CUDA", "mitm", {"device": "cuda"}, max_count=2_000_000))
    out.append(Config("cpsat 1 core", "cpsat", {"workers": 1}, max_count=2000))
    if "gurobi" in solver.available_backends():
        from solver.backends.gurobi import license_problem

        if license_problem() is None:
            out.append(Config("gurobi 1 core", "gurobi", {"workers": 1}, max_count=500))
    out.append(Config("brute 1 core", "brute", {"workers": 1}, max_m=20, max_count=2000))
    return out


def agreement(res: solver.SolveResult, ref: solver.SolveResult, objective: str, eps: float) -> tuple[int, int]:
    """(problems with the same optimum as the exact reference, problems claiming better than it).

    min-error: same optimum = errors equal within both tolerances. min-size: same status and
    size (and, for float-exact backends, the same error). "Better than exact" is a size below
    the reference's or an error below the reference's minus the tolerances: a bug if ever > 0.
    """
    n = len(res)
    tol = res.tolerance + ref.tolerance[:n] + 1e-12
    ref_err, ref_size, ref_status = ref.errors[:n], ref.sizes[:n], ref.status[:n]
    if objective == "min-error":
        same = np.abs(res.errors - ref_err) <= tol
        better = res.errors < ref_err - tol
    else:
        fits = ref_status == Status.OPTIMAL
        same = (res.status == ref_status) & np.where(fits, res.sizes == ref_size, np.abs(res.errors - ref_err) <= tol)
        better = (fits & (res.sizes < ref_size)) | ((res.status == Status.OPTIMAL) & (res.errors > eps + 1e-12))
    return int(same.sum()), int(better.sum())


def run_cell(cfg: Config, objective: str, eps: float, t: np.ndarray, c: np.ndarray, ref: solver.SolveResult,
             budget: float, repeats: int, min_count: int, time_limit: float | None) -> dict[str, Any]:
    kwargs = dict(cfg.kwargs, progress=False, presolve=False)  # the backend alone
    if time_limit is not None and cfg.backend in ("cpsat", "gurobi"):
        kwargs["time_limit"] = time_limit

    def once(count: int) -> solver.SolveResult:
        return solver.solve(t[:count], c[:count], objective, eps=eps, backend=cfg.backend, **kwargs)

    pilot = once(min(min_count, cfg.max_count))
    per = pilot.seconds / len(pilot)
    count = int(np.clip(budget / (repeats * per), min_count, min(cfg.max_count, len(t))))
    if per * count * repeats > 3 * budget:  # slow cell: the pilot is the only measurement
        runs, times = [pilot], [per]
    else:
        runs = [once(count) for _ in range(repeats)]
        times = [r.seconds / len(r) for r in runs]
    res = runs[-1]
    same, better = agreement(res, ref, objective, eps)
    return {
        "config": cfg.label,
        "backend": cfg.backend,
        "objective": objective,
        "m": int(c.shape[1]),
        "problems": len(res),
        "repeats": len(runs),
        "seconds_per_problem": float(np.median(times)),
        "seconds_per_problem_all": [float(x) for x in times],
        "agree": same,
        "better_than_exact": better,
        "status_counts": res.status_counts(),
        "presolved": int(res.presolved.sum()),
        "max_tolerance": float(res.tolerance.max()),
        "certificate": res.info.get("certificate"),
    }


def plot(rows: list[dict[str, Any]], path: Path) -> dict[str, dict[str, list[float]]]:
    """Seconds per problem against m, one line per configuration, one panel per objective; returns
    the plotted series (:func:`benchmarks.common.plotted_series`)."""
    objectives = sorted({r["objective"] for r in rows}, key=OBJECTIVES.index)
    plt, fig, axes = new_figure(1, len(objectives), figsize=(6 * len(objectives), 4.5), squeeze=False)
    for ax, objective in zip(axes[0], objectives):
        for label in dict.fromkeys(r["config"] for r in rows):
            pts = sorted((r["m"], r["seconds_per_problem"]) for r in rows
                         if r["config"] == label and r["objective"] == objective)
            if pts:
                ax.plot(*zip(*pts), marker="o", label=label)
        ax.set_yscale("log")
        ax.set_xlabel("m (coefficients per problem)")
        ax.set_ylabel("seconds per problem (median of repeats)")
        ax.set_title(objective)
        ax.legend(fontsize=8)
    return save_figure(plt, fig, path, dpi=120)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help=f"seconds-long run: m in {QUICK_M}, small budget")
    p.add_argument("--m", type=int, nargs="+", help=f"problem sizes (default {DEFAULT_M})")
    p.add_argument("--objectives", nargs="+", choices=OBJECTIVES, default=OBJECTIVES)
    p.add_argument("--backends", nargs="+", help="only these backends (names as in solver.available_backends())")
    p.add_argument("--eps", type=float, default=0.01, help="min-size tolerance (default 0.01)")
    p.add_argument("--budget", type=float, help="seconds of timing per cell (default 4, quick 0.3)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per cell; the median is reported")
    p.add_argument("--time-limit", type=float, default=60.0,
                   help="per-problem limit for cpsat/gurobi in seconds; hits are reported as 'feasible'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("bench_out/backends"), help="output directory")


def run(args: argparse.Namespace) -> dict[str, Any]:
    ms = args.m or (QUICK_M if args.quick else DEFAULT_M)
    budget = args.budget if args.budget is not None else (0.3 if args.quick else 4.0)
    min_count = 3
    info = machine_info()
    cfgs = [cfg for cfg in configs(info["cores"]) if not args.backends or cfg.backend in args.backends]
    if not cfgs:
        raise UsageError(f"--backends {args.backends} selects no installed backend; installed: "
                         f"{solver.available_backends()}")
    rng = np.random.default_rng(args.seed)
    rows: list[dict[str, Any]] = []
    # compile the numba kernel and start torch before any timing
    solver.solve([0.1], [[0.2, 0.3]], backend="mitm", progress=False)
    solver.solve([0.1], [[0.2, 0.3]], "min-size", eps=0.01, backend="mitm", progress=False)
    for m in ms:
        n_max = max(min(cfg.max_count, 20000) for cfg in cfgs)
        c = product_coefficients(rng, n_max, m)
        t = weight_like_targets(rng, n_max)
        for objective in args.objectives:
            ref = solver.solve(t, c, objective, eps=args.eps, backend="mitm", workers=None, progress=False, presolve=False)
            for cfg in cfgs:
                if m > cfg.max_m:
                    continue
                row = run_cell(cfg, objective, args.eps, t, c, ref, budget, args.repeats, min_count, args.time_limit)
                rows.append(row)
                print(f"m={m:2d} {objective:9s} {cfg.label:22s} {format_seconds(row['seconds_per_problem']):>9s}/problem "
                      f"agree {row['agree']}/{row['problems']} better-than-exact {row['better_than_exact']} "
                      f"{row['status_counts']}", file=sys.stderr, flush=True)
    base = {(r["m"], r["objective"]): r["seconds_per_problem"] for r in rows if r["config"].startswith("mitm numba") and "1 core" not in r["config"]}
    for r in rows:
        ref_time = base.get((r["m"], r["objective"]))
        r["ratio_to_mitm"] = r["seconds_per_problem"] / ref_time if ref_time else math.nan

    headers = ["m", "objective", "backend", "time / problem", "x mitm", "problems", "repeats", "agree", "better than exact", "optimal", "feasible", "infeasible", "presolved"]
    table = [[r["m"], r["objective"], r["config"], format_seconds(r["seconds_per_problem"]),
              f"{r['ratio_to_mitm']:.3g}", r["problems"], r["repeats"], f"{r['agree']}/{r['problems']}",
              r["better_than_exact"], r["status_counts"]["optimal"], r["status_counts"]["feasible"],
              r["status_counts"]["infeasible"], r["presolved"]] for r in rows]
    cores = info["cores"]
    md = [
        "# Solver backends benchmark\n",
        f"Command: `{command_line()}`  \n",
        f"Machine: {info['cpu']}, {cores} cores, GPU: {info['gpu'] or 'none'}; "
        f"torch {info['torch']}, numba {info['numba']}, ortools {info['ortools']}, gurobipy {info['gurobipy']}\n",
        f"Instances: coefficients u*v with u, v ~ U[-1,1]; targets N(0, 0.25^2) clipped to [-1,1]; "
        f"eps = {args.eps} for min-size; seed {args.seed}. Time per problem = wall time of "
        f"`solver.solve` (validation, presolve, solve, error recomputation) / problems, median of "
        f"repeats; presolve off (the backend alone). 'agree' = same optimum as the exact mitm reference within the recorded "
        f"tolerances; 'better than exact' must be 0. 'x mitm' = time / time of mitm on {cores} cores.\n",
        markdown_table(headers, table),
    ]
    goals = goal_lines(rows, cores)
    md.append("\n## Goals\n" + "\n".join(f"- {g}" for g in goals) + "\n")
    payload = {"machine": info, "command": command_line(), "eps": args.eps, "seed": args.seed, "budget": budget, "rows": rows, "goals": goals}
    args.out.mkdir(parents=True, exist_ok=True)
    payload["figure"] = plot(rows, args.out / "backends.png")
    paths = write_outputs(args.out, "backends", payload, "".join(md))
    print("".join(md))
    print(f"wrote {paths['md']}, {paths['json']}, {args.out / 'backends.png'}")
    return payload


def goal_lines(rows: list[dict[str, Any]], cores: int) -> list[str]:
    """The issue's performance goals, checked against this run's figures."""

    def find(label_start: str, objective: str, m: int):
        for r in rows:
            if r["config"].startswith(label_start) and r["objective"] == objective and r["m"] == m:
                return r
        return None

    checks = [
        (f"mitm numba {cores} cores", "min-error", 21, 50e-6, f"mitm batched, m = 21, min-error on {cores} cores <= 50 us/problem"),
        ("mitm numba 1 core", "min-error", 21, 15e-6, "mitm, m = 21, min-error on one worker <= 15 us/problem"),
        ("mitm torch CUDA", "min-error", 21, 1e-6, "mitm on CUDA, m = 21, min-error <= 1 us/problem"),
        ("cpsat 1 core", "min-size", 21, 5e-3, "cpsat, m = 21, min-size eps = 0.01 <= 5 ms/problem/core"),
    ]
    out = []
    for label, objective, m, limit, text in checks:
        r = find(label, objective, m)
        if r is None:
            out.append(f"{text}: not measured in this run")
        else:
            verdict = "met" if r["seconds_per_problem"] <= limit else "NOT met"
            out.append(f"{text}: {format_seconds(r['seconds_per_problem'])} ({verdict})")
    return out


def main(argv: list[str] | None = None) -> None:
    cli_main("lottery bench backends", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    main()
