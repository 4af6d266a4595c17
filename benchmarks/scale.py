"""Scale-out measurements: bounded memory on a 10M-weight target, and Dask overhead.

* ``memory``: a synthetic 2000-2500-2000-10 ReLU MLP (10.02M weights, random weights), built
  with n = 12, min-error, mitm, by `lottery solve` processes with problems streamed in blocks
  (--block-problems 65536) and, for comparison, all of a layer's problems at once; peak resident
  memory of the whole process tree.
* ``dask``: the Experiment 1 network (784-500-10), min-size with cpsat and no presolve (CP-SAT
  solves all 397,000 problems), on the local 2-process pool and on a 2-worker dask LocalCluster
  (one thread per worker); the ratio of the solve times is Dask's overhead.

    lottery bench scale                 # both (about 15 minutes on 2 cores)
    lottery bench scale --parts memory
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .common import cli_main, command_line, machine_info, markdown_table, write_outputs
from .exp1 import row_of, solve_once, target_for

SYNTHETIC = [2000, 2500, 2000, 10]


def synthetic_target(path: Path) -> Path:
    import torch

    from models.zoo import mlp

    if not path.is_file():
        torch.manual_seed(0)
        net = mlp(SYNTHETIC, biases=False)
        with torch.no_grad():
            for mod in net.modules():
                if isinstance(mod, torch.nn.Linear):
                    mod.weight.uniform_(-1, 1).div_(mod.in_features ** 0.5)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(net.state_dict(), path)
    return path


def part_memory(args) -> tuple[list[list[Any]], list[dict[str, Any]]]:
    target = synthetic_target(args.out / "synthetic_10M.pt")
    rows, raw = [], []
    for label, block in (("streamed, --block-problems 65536", 65536), ("a whole layer at once", 1 << 40)):
        res = solve_once(target, "none", 12, 0.01, ["--objective", "min-error", "--backend", "mitm", "--workers", "2",
                                                   "--input-shape", str(SYNTHETIC[0]), "--block-problems", str(block)],
                         args.out / f"memory-{block}", args.timeout)
        r = row_of(label, res)
        raw.append(r)
        rows.append([label, f"{r['target_params']:,}", f"{r['random_params']:,}", f"{r['solve_s']:.1f}", f"{r['total_s']:.1f}",
                     f"{r['peak_after_solve_mb']:.0f}", f"{r['peak_mb']:.0f}", f"{r['peak_tree_mb']:.0f}"])
        print(f"memory {label}: peak {r['peak_tree_mb']:.0f} MB, total {r['total_s']:.1f} s", file=sys.stderr, flush=True)
    return rows, raw


def part_dask(args) -> tuple[list[list[Any]], list[dict[str, Any]]]:
    from distributed import LocalCluster

    target = target_for(500)
    common = ["--objective", "min-size", "--backend", "cpsat", "--scale-policy", "rms", "--no-presolve"]
    rows, raw = [], []
    local = row_of("local pool, 2 processes", solve_once(target, "digits28", 21, 0.01, common + ["--workers", "2"],
                                                         args.out / "dask-local", args.timeout))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        remote = row_of("dask LocalCluster, 2 workers", solve_once(
            target, "digits28", 21, 0.01, common + ["--executor", "dask", "--scheduler", cluster.scheduler_address],
            args.out / "dask-cluster", args.timeout))
    for r in (local, remote):
        raw.append(r)
        rows.append([r["run"], f"{r['problems']:,}", f"{r['solve_s']:.1f}", f"{r['total_s']:.1f}",
                     f"{r['solve_s'] / local['solve_s']:.3f}", f"{r['kept_params']:,}"])
        print(f"dask {r['run']}: solve {r['solve_s']:.1f} s", file=sys.stderr, flush=True)
    return rows, raw


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--parts", nargs="+", choices=["memory", "dask"], default=["memory", "dask"])
    p.add_argument("--timeout", type=float, default=3600.0)
    p.add_argument("--out", type=Path, default=Path("bench_out/scale"))


def run(args: argparse.Namespace) -> dict[str, Any]:
    args.out.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    md = ["# Scale-out measurements\n", f"Command: `{command_line()}`  \n",
          f"Machine: {info['cpu']}, {info['cores']} cores, {info.get('memory_gib')} GiB\n"]
    payload: dict[str, Any] = {"machine": info, "command": command_line()}
    if "memory" in args.parts:
        rows, raw = part_memory(args)
        payload["memory"] = raw
        md.append("\n## Bounded memory: 10M-weight synthetic MLP 2000-2500-2000-10, n = 12, mitm, 2 workers\n")
        md.append("Peak after solve: resident memory when every problem is solved (problems, solver, masks), "
                  "before the pruned network is assembled and verified in float64; the last two columns cover the whole "
                  "run (the random network itself is 10M x n parameters).\n\n")
        md.append(markdown_table(["problems held", "target weights", "random params", "solve s", "total s",
                                  "peak MB after solve", "peak MB (main)", "peak MB (process tree)"], rows))
    if "dask" in args.parts:
        rows, raw = part_dask(args)
        payload["dask"] = raw
        md.append("\n## Dask overhead: Experiment 1 network, min-size, cpsat, no presolve\n")
        md.append(markdown_table(["executor", "problems", "solve s", "total s", "solve time / local", "kept params"], rows))
    paths = write_outputs(args.out, "scale", payload, "".join(md))
    print("".join(md))
    print(f"wrote {paths['md']}, {paths['json']}")
    return payload


def main(argv: list[str] | None = None) -> None:
    cli_main("lottery bench scale", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    main()
