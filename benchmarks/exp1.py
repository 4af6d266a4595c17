"""The paper's Experiment 1 done for real: a 784-500-10 ReLU MLP without biases, every weight a
subset-sum problem over n = 21 coefficients, eps = 0.01, the pruned network built and verified.

Each run is a separate `lottery solve` process (end-to-end wall time and peak memory include
start-up, loading, construction, solving, assembly, verification and writing the run):

1. min-error, mitm, CPU, 2 workers;
2. min-error, mitm, CUDA (when a GPU is present);
3. min-size, cpsat, 2 workers (the MILP path the paper used, done exactly);
4. min-size, gurobi, 2 workers (when installed and licensed);
5. min-size, cpsat, 2 workers, presolve off: CP-SAT solves every problem (the MILP alone);
6. (not by default: ~25 min) min-size, gurobi, 2 workers, presolve off.

The min-size runs use ``--scale-policy rms`` (coefficients dense where most weights are).
Then run 1 is repeated on 784-250-10 and 784-1000-10 to show time is linear in the weights.
Without ``--target`` the target is trained (cached) on scikit-learn's digits upsampled to 28x28
and verified on the digits test split (``--data digits28``); with ``--target CKPT --data
mnist:DIR`` it is the user's MNIST network. Writes exp1.md, exp1.json and exp1.png.

    lottery bench exp1                      # all runs + scaling (minutes)
    lottery bench exp1 --runs 1 --no-scaling
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import LotteryError

from .common import cli_main, command_line, machine_info, markdown_table, new_figure, save_figure, write_outputs

HIDDEN = 500
SCALING_HIDDEN = [250, 500, 1000]
TRAIN = dict(epochs=60, batch=128, lr=1e-3)
REFERENCE = {
    "label": "paper (official code): Gurobi, MIPGap 0.01, one model per weight",
    "seconds": 77266.0, "cores": 36, "kept_x_target": 3.73e6 / 397000, "accuracy": 0.9719,
}


def target_for(hidden: int) -> Path:
    from models.default import cached_digits_mlp

    return cached_digits_mlp([784, hidden, 10], biases=False, upsample=True, **TRAIN)


def exp1_network(hidden: int = HIDDEN):
    """The trained Experiment 1 network 784-hidden-10 (cached file, see :func:`target_for`) as a module."""
    from models.target import load_target

    return load_target(target_for(hidden), "mlp")


def run_spec(run: int) -> dict[str, Any] | None:
    import torch

    import solver

    specs = {
        1: dict(label="1: min-error, mitm, CPU, 2 workers", args=["--objective", "min-error", "--backend", "mitm", "--workers", "2"]),
        2: dict(label="2: min-error, mitm, CUDA", args=["--objective", "min-error", "--backend", "mitm", "--device", "cuda"]),
        3: dict(label="3: min-size, cpsat, 2 workers", args=["--objective", "min-size", "--backend", "cpsat", "--workers", "2",
                                                             "--scale-policy", "rms"]),
        4: dict(label="4: min-size, gurobi, 2 workers", args=["--objective", "min-size", "--backend", "gurobi", "--workers", "2",
                                                              "--scale-policy", "rms"]),
        5: dict(label="5: min-size, cpsat, 2 workers, no presolve", args=["--objective", "min-size", "--backend", "cpsat",
                                                                          "--workers", "2", "--scale-policy", "rms", "--no-presolve"]),
        6: dict(label="6: min-size, gurobi, 2 workers, no presolve", args=["--objective", "min-size", "--backend", "gurobi",
                                                                           "--workers", "2", "--scale-policy", "rms", "--no-presolve"]),
    }
    spec = specs[run]
    if run == 2 and not torch.cuda.is_available():
        return dict(spec, skipped="no CUDA device (torch.cuda.is_available() is False)")
    if run in (4, 6):
        from solver.backends.gurobi import license_problem

        problem = license_problem() if "gurobi" in solver.available_backends() else "gurobipy is not installed"
        if problem:
            return dict(spec, skipped=f"gurobi unusable: {problem}")
    return spec


def solve_once(target: Path, data: str, n: int, eps: float, extra: list[str], out: Path, timeout: float) -> dict[str, Any]:
    """One `lottery solve` process; returns its report plus wall time and peak memory."""
    if "min-size" in extra:
        extra = [*extra, "--eps", str(eps)]
    cmd = [sys.executable, "-m", "benchmarks.measure", "solve", str(target), "--arch", "mlp", "--data", data,
           "--n", str(n), "--out", str(out), "--force", "--no-progress", *extra]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    peak_tree = tree_peak_rss(proc, timeout)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise LotteryError(f"`{' '.join(cmd)}` failed ({proc.returncode}):\n{stderr[-3000:]}")
    peak = re.search(r"PEAK_RSS_KB main=(\d+) workers=(\d+)", stderr)
    report = json.loads((out / "report.json").read_text())
    return {
        "command": "lottery " + " ".join(cmd[3:]),
        "wall_seconds": wall,
        "peak_rss_mb": int(peak.group(1)) / 1024 if peak else float("nan"),
        "peak_tree_rss_mb": peak_tree / 2**20,
        "report": report,
    }


def tree_peak_rss(proc: subprocess.Popen, timeout: float, interval: float = 0.1) -> int:
    """Peak of the summed resident memory of ``proc`` and all its descendants (solver worker
    processes included), sampled every ``interval`` seconds until it exits."""
    import psutil

    root = psutil.Process(proc.pid)
    peak = 0
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            raise LotteryError(f"run exceeded --timeout {timeout} s")
        total = 0
        try:
            for p in [root, *root.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
        except psutil.NoSuchProcess:
            break
        peak = max(peak, total)
        time.sleep(interval)
    return peak


def row_of(label: str, res: dict[str, Any]) -> dict[str, Any]:
    r = res["report"]
    problems = sum(l["problems"] for l in r["layers"])
    return {
        "run": label,
        "solve_s": r["seconds"]["solve"],
        "total_s": res["wall_seconds"],
        "peak_mb": res["peak_rss_mb"],
        "peak_tree_mb": res["peak_tree_rss_mb"],
        "presolved": r.get("presolved", 0),
        "peak_after_solve_mb": r.get("memory", {}).get("peak_rss_mb_after_solve", float("nan")),
        "problems": problems,
        "problems_per_s": problems / r["seconds"]["solve"],
        "max_weight_error": r["max_weight_error"],
        "mean_weight_error": r["mean_weight_error"],
        "status_counts": r["status_counts"],
        "target_params": r["target_params"],
        "random_params": r["random_params"],
        "kept_params": r["kept_params"],
        "kept_x_target": r["kept_params"] / r["target_params"],
        "accuracy_target": r.get("accuracy", {}).get("target"),
        "accuracy_pruned": r.get("accuracy", {}).get("pruned"),
        "agreement": r.get("agreement"),
        "certified_bound": r["certified_bound"],
        "max_output_error": r["max_output_error"],
        "command": res["command"],
    }


def plot(scaling: list[dict[str, Any]], path: Path) -> dict[str, dict[str, list[float]]]:
    """Solve and end-to-end seconds against target weights, with the linear fit; returns the plotted series."""
    plt, fig, ax = new_figure(figsize=(6, 4.2))
    w = np.array([s["target_params"] for s in scaling], dtype=float)
    for key, label in (("solve_s", "solve"), ("total_s", "end to end")):
        t = np.array([s[key] for s in scaling])
        ax.plot(w, t, "o-", label=label)
    slope = float(np.sum(w * np.array([s["solve_s"] for s in scaling])) / np.sum(w * w))
    ax.plot(w, slope * w, "k--", linewidth=1, label=f"linear fit: {slope * 1e6:.1f} us/weight")
    ax.set_xlabel("target weights (784-H-10)")
    ax.set_ylabel("seconds (run 1: min-error, mitm, 2 workers)")
    ax.legend()
    return save_figure(plt, fig, path, dpi=120)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", type=int, nargs="+", default=[1, 2, 3, 4, 5], choices=[1, 2, 3, 4, 5, 6])
    p.add_argument("--hidden", type=int, default=HIDDEN, help=f"hidden width of the trained target (default {HIDDEN})")
    p.add_argument("--scaling-hidden", type=int, nargs="+", default=SCALING_HIDDEN,
                   help=f"hidden widths timed for the linear-scaling check (default {SCALING_HIDDEN})")
    p.add_argument("--no-scaling", action="store_true", help="skip the 784-250-10 / 784-1000-10 timings")
    p.add_argument("--target", type=Path, help="a 784-H-10 MLP state_dict (default: trained on digits upsampled to 28x28)")
    p.add_argument("--data", help="data for --target (e.g. mnist:DIR); default digits28")
    p.add_argument("--n", type=int, default=21)
    p.add_argument("--eps", type=float, default=0.01)
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds allowed per run")
    p.add_argument("--out", type=Path, default=Path("bench_out/exp1"))


def run(args: argparse.Namespace) -> dict[str, Any]:
    info = machine_info()
    target = args.target or target_for(args.hidden)
    data = args.data or "digits28"
    rows, skipped = [], []
    for run_id in args.runs:
        spec = run_spec(run_id)
        if "skipped" in spec:
            skipped.append(f"{spec['label']}: skipped, {spec['skipped']}")
            print(skipped[-1], file=sys.stderr)
            continue
        res = solve_once(target, data, args.n, args.eps, spec["args"], args.out / f"run{run_id}", args.timeout)
        rows.append(row_of(spec["label"], res))
        r = rows[-1]
        print(f"{spec['label']}: solve {r['solve_s']:.1f} s, total {r['total_s']:.1f} s, peak {r['peak_mb']:.0f} MB, "
              f"kept {r['kept_x_target']:.3f}x, acc {r['accuracy_target']} -> {r['accuracy_pruned']}, "
              f"agreement {r['agreement']}", file=sys.stderr, flush=True)
    scaling = []
    if not args.no_scaling and args.target is None:
        for hidden in args.scaling_hidden:
            spec = run_spec(1)
            res = solve_once(target_for(hidden), data, args.n, args.eps, spec["args"], args.out / f"scaling{hidden}", args.timeout)
            scaling.append(row_of(f"784-{hidden}-10", res))
            print(f"scaling 784-{hidden}-10: {scaling[-1]['target_params']} weights, solve {scaling[-1]['solve_s']:.1f} s, "
                  f"total {scaling[-1]['total_s']:.1f} s", file=sys.stderr, flush=True)

    def fmt_acc(x):
        return "n/a" if x is None else f"{100 * x:.2f}%"

    headers = ["run", "solve s", "total s", "peak MB (main / all processes)", "problems/s", "max / mean weight error",
               "statuses (opt/feas/inf)", "by presolve / backend",
               "random params", "kept params (x target)", "accuracy target -> pruned", "agreement", "certified bound"]
    table = [[r["run"], f"{r['solve_s']:.1f}", f"{r['total_s']:.1f}", f"{r['peak_mb']:.0f} / {r['peak_tree_mb']:.0f}",
              f"{r['problems_per_s']:,.0f}", f"{r['max_weight_error']:.3g} / {r['mean_weight_error']:.3g}",
              "/".join(str(r["status_counts"][k]) for k in ("optimal", "feasible", "infeasible")),
              f"{r['presolved']:,} / {r['problems'] - r['presolved']:,}",
              f"{r['random_params']:,}", f"{r['kept_params']:,} ({r['kept_x_target']:.3f}x)",
              f"{fmt_acc(r['accuracy_target'])} -> {fmt_acc(r['accuracy_pruned'])}",
              "n/a" if r["agreement"] is None else f"{100 * r['agreement']:.2f}%", f"{r['certified_bound']:.3g}"] for r in rows]
    ref = REFERENCE
    table.append([ref["label"], f"{ref['seconds']:,.0f} on {ref['cores']} cores", "-", "-", f"{397000 / ref['seconds']:.1f}",
                  "MIPGap 0.01 (not exact)", "-", "-", "8.34M coefficients", f"3.73M ({ref['kept_x_target']:.2f}x)",
                  f"{100 * ref['accuracy']:.2f}% (MNIST, target)", "not built", "-"])
    md = [
        "# Experiment 1 (Pensia et al. 2020) at full scale\n",
        f"Command: `{command_line()}`  \n",
        f"Machine: {info['cpu']}, {info['cores']} cores, {info.get('memory_gib')} GiB, GPU: {info['gpu'] or 'none'}; "
        f"torch {info['torch']}, ortools {info['ortools']}, gurobipy {info['gurobipy']}\n",
        f"Target: {target} (784-{args.hidden}-10 ReLU MLP, no biases), data {data}; n = {args.n}, eps = {args.eps}. "
        "Each run is one `lottery solve` process; 'total' is its wall time end to end, 'peak' its resident memory "
        "(main process by ru_maxrss / the whole process tree, workers included, sampled every 0.1 s).\n",
        markdown_table(headers, table),
    ]
    if skipped:
        md.append("\n" + "\n".join(f"- {s}" for s in skipped) + "\n")
    if scaling:
        w = np.array([s["target_params"] for s in scaling], dtype=float)
        t = np.array([s["solve_s"] for s in scaling])
        md.append("\n## Time against the number of weights (run 1 settings)\n")
        md.append(markdown_table(["target", "weights", "solve s", "total s", "solve us / weight", "peak MB"],
                                 [[s["run"], f"{s['target_params']:,}", f"{s['solve_s']:.1f}", f"{s['total_s']:.1f}",
                                   f"{1e6 * s['solve_s'] / s['target_params']:.1f}", f"{s['peak_mb']:.0f}"] for s in scaling]))
        ratio = (t[-1] / t[0]) / (w[-1] / w[0])
        md.append(f"\nSolve time ratio largest/smallest divided by weight ratio: {ratio:.2f} (1.00 = exactly linear).\n")
        args.out.mkdir(parents=True, exist_ok=True)
        figure = plot(scaling, args.out / "exp1.png")
        md.append("\n![scaling](exp1.png)\n")
    payload = {"machine": info, "command": command_line(), "target": str(target), "data": data, "n": args.n, "eps": args.eps,
               "runs": rows, "skipped": skipped, "scaling": scaling, "reference": REFERENCE}
    if scaling:
        payload["figure"] = figure
    paths = write_outputs(args.out, "exp1", payload, "".join(md))
    print("".join(md))
    print(f"wrote {paths['md']}, {paths['json']}" + (f", {args.out / 'exp1.png'}" if scaling else ""))
    return payload


def main(argv: list[str] | None = None) -> None:
    cli_main("lottery bench exp1", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    main()
