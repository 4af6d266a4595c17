"""The paper's Experiment 2, with this project's constructed tickets beside the trained ones.

Two ways to find a strong ticket of the same size class, side by side:

* found by training a mask (edge-popup, :mod:`benchmarks.popup`) in a random network with the
  construction's structure (``redundant``: each Linear as r = 5 fan-out units per input, with and
  without a ReLU after the fan-out, dense combine) and in a plain network widened to about the same
  number of weights (``wide``), at each sparsity (the pruned fraction of every layer, the fan-out
  included, as in the paper's code), several seeds;
* constructed by subset sum (this project): the trained target (same architecture) built exactly,
  min-size at several eps and min-error, at n = 21.

Targets and training data: digits upsampled to 28x28 (no MNIST training split is available
offline; ``--data mnist:DIR`` evaluates on MNIST's test split where a user has it, but the targets
and masks are still trained on digits28). Accuracy is on the test split. The finding under test (the
structured network prunes to better accuracy than the wide one) is read per sparsity as the
difference of mean accuracies, redundant minus wide, with a Welch t 95% interval over the seeds.
Writes exp2.md, exp2.json (rows: arch, structure, relu (redundant rows), sparsity or eps, params,
kept, accuracy, seed) and exp2.png (accuracy against kept weights, one curve per structure with
error bars of one standard deviation over seeds, constructed tickets as points).

The training runs are independent and seeded; ``--jobs`` runs them in that many worker processes
(loky) with one thread each (default: one per core on CPU; a CUDA device trains one at a time).

    lottery bench exp2 --quick        # fc2 only, 3 sparsities, 1 seed, few epochs
    lottery bench exp2                # fc2, fc4, lenet5; 6 sparsities; 3 seeds
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

from models.errors import UsageError

from .common import cli_main, command_line, machine_info, markdown_table, new_figure, save_figure, write_outputs

SPARSITIES = [0.5, 0.75, 0.9, 0.95, 0.98, 0.99]
CONSTRUCT_EPS = [0.005, 0.01, 0.02, 0.05]
ARCHS = ["fc2", "fc4", "lenet5"]
SEEDS = [0, 1, 2]
EPOCHS = 20  # an epoch of digits28's 1,257 training images is 20 steps of 64
QUICK = dict(archs=["fc2"], sparsities=[0.5, 0.9, 0.99], seeds=[0], epochs=3, eps=[0.01])
#: the edge-popup networks: (structure, ReLU after the fan-out); the wide network has no fan-out
VARIANTS = [("redundant", True), ("redundant", False), ("wide", None)]


def label(structure: str, relu: bool | None) -> str:
    return structure if structure != "redundant" else f"redundant ({'ReLU' if relu else 'no ReLU'})"


def target_for(arch: str):
    """The trained target of an architecture (cached): fc2 784-500-10 and fc4 784-500-500-500-10
    without biases, and this project's LeNet-5, all trained on digits28."""
    from models.default import cached_digits_lenet5, cached_digits_mlp
    from models.target import load_target

    from .exp1 import TRAIN  # Experiment 1's training settings

    if arch == "lenet5":
        return load_target(cached_digits_lenet5(), "lenet5")
    sizes = {"fc2": [784, 500, 10], "fc4": [784, 500, 500, 500, 10]}[arch]
    return load_target(cached_digits_mlp(sizes, biases=False, upsample=True, **TRAIN), "mlp")


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: torch sees no CUDA device here")
    return name


@functools.lru_cache(maxsize=2)
def _datasets(data: str | None):
    from models.data import digits28, load_data

    return digits28("train"), (load_data(data) if data else digits28("test"))


def popup_row(arch: str, structure: str, relu: bool | None, sparsity: float, seed: int, epochs: int,
              data: str | None, device: str, threads: int | None = None) -> dict:
    """One edge-popup run: the network of ``seed`` trained ``epochs`` on digits28, its test accuracy.
    Runs in a worker process (``threads``: torch's threads there)."""
    import torch

    from .popup import PopupNet, TrainSettings, accuracy, train_scores

    if threads is not None:
        torch.set_num_threads(threads)
    train, test = _datasets(data)
    start = time.perf_counter()
    net = PopupNet(arch, structure, sparsity, seed, relu=bool(relu) if structure == "redundant" else True)
    net = train_scores(net, train.x, train.y, TrainSettings(epochs=epochs), seed, device)
    row = {"arch": arch, "structure": structure, "sparsity": sparsity, "params": net.weights(), "kept": net.kept(),
           "accuracy": accuracy(net, test.x, test.y, device), "seed": seed, "epochs": epochs}
    if structure == "redundant":
        row["relu"] = bool(relu)
    return dict(row, seconds=time.perf_counter() - start)


def popup_rows(tasks: list[tuple], jobs: int, device: str) -> list[dict]:
    """Every edge-popup run of ``tasks`` (popup_row's arguments), in ``jobs`` worker processes (one
    thread each) or, with jobs = 1, here; rows in the order of the tasks, a progress bar meanwhile."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(tasks), desc="edge-popup runs", unit="run")

    def done(row: dict) -> dict:
        bar.update()
        bar.write(f"{row['arch']} {label(row['structure'], row.get('relu'))} sparsity {row['sparsity']:g} seed "
                  f"{row['seed']}: accuracy {row['accuracy']:.4f} ({row['seconds']:.0f} s)")
        return row

    try:
        if jobs == 1:
            return [done(popup_row(*task, device)) for task in tasks]
        from loky import get_reusable_executor

        pool = get_reusable_executor(max_workers=jobs)
        futures = [pool.submit(popup_row, *task, device, 1) for task in tasks]
        return [done(f.result()) for f in futures]
    finally:
        bar.close()


def welch(a: list[float], b: list[float], confidence: float = 0.95) -> tuple[float, float, float] | None:
    """mean(a) - mean(b) with its Welch t interval; None with fewer than 2 values on a side."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    diff = statistics.mean(a) - statistics.mean(b)
    if va + vb == 0:
        return diff, diff, diff
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = stats.t.ppf(0.5 + confidence / 2, dof) * math.sqrt(va + vb)
    return diff, diff - half, diff + half


def constructed_rows(arch: str, eps_list: list[float], test, n: int = 21) -> list[dict]:
    """The target built exactly at n: min-size at each eps and min-error; params = the structured
    random network's weights (fan-out and combine, as the redundant structure counts them)."""
    import torch

    from models.construct import ConstructOptions, construct
    from .popup import accuracy

    target = target_for(arch)
    rows = []
    for eps in [*eps_list, None]:
        start = time.perf_counter()
        kw = dict(objective="min-error") if eps is None else dict(objective="min-size", eps=eps)
        c = construct(target, (1, 28, 28), (0.0, 1.0), ConstructOptions.from_kwargs(n=n, progress=False, **kw))
        rows.append({"arch": arch, "structure": "constructed", "eps": eps, "objective": kw["objective"],
                     "params": sum(spec.fanout_params() for spec in c.specs), "kept": sum(s.kept() for s in c.solutions),
                     "accuracy": accuracy(c.pruned, test.x, test.y), "seed": c.options.seed, "n": n,
                     "target_accuracy": accuracy(c.target_as(torch.float32), test.x, test.y),
                     "seconds": time.perf_counter() - start})
    return rows


def by_sparsity(rows: list[dict], arch: str, structure: str, relu: bool | None = None) -> dict[float, list[dict]]:
    """The edge-popup rows of one arch and network (structure, and ReLU for the redundant one),
    grouped by sparsity (ascending): one row per seed."""
    groups: dict[float, list[dict]] = {}
    mine = (r for r in rows if r["arch"] == arch and r["structure"] == structure and r.get("relu") == relu)
    for r in sorted(mine, key=lambda r: r["sparsity"]):
        groups.setdefault(r["sparsity"], []).append(r)
    return groups


def plot(rows: list[dict], archs: list[str], path: Path) -> dict:
    plt, fig, axes = new_figure(1, len(archs), figsize=(6 * len(archs), 4.5), squeeze=False)
    for ax, arch in zip(axes[0], archs):
        for (structure, relu), marker in zip(VARIANTS, ("o-", "^:", "s--")):
            xs, ys, errs = [], [], []
            for group in by_sparsity(rows, arch, structure, relu).values():
                xs.append(statistics.mean(r["kept"] for r in group))
                accs = [r["accuracy"] for r in group]
                ys.append(statistics.mean(accs))
                errs.append(statistics.stdev(accs) if len(accs) > 1 else 0.0)
            if xs:
                ax.errorbar(xs, ys, yerr=errs, fmt=marker, capsize=3, label=f"edge-popup, {label(structure, relu)}")
        built = [r for r in rows if r["arch"] == arch and r["structure"] == "constructed"]
        if built:
            ax.plot([r["kept"] for r in built], [r["accuracy"] for r in built], "k*", ms=10,
                    label="constructed (subset sum)")
            for r in built:
                ax.annotate("min-error" if r["eps"] is None else f"eps {r['eps']:g}", (r["kept"], r["accuracy"]),
                            fontsize=7, xytext=(4, -8), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("kept weights")
        ax.set_ylabel("test accuracy")
        ax.set_title(arch)
        ax.legend(fontsize=8)
    return save_figure(plt, fig, path)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="fc2 only, sparsities 0.5/0.9/0.99, one seed, 3 epochs")
    p.add_argument("--archs", default=None, help=f"comma-separated subset of {','.join(ARCHS)}")
    p.add_argument("--epochs", type=int, default=EPOCHS, help=f"edge-popup epochs (default {EPOCHS})")
    p.add_argument("--seeds", type=int, default=len(SEEDS), help=f"seeds per point (default {len(SEEDS)})")
    p.add_argument("--jobs", type=int, default=None,
                   help="edge-popup runs at a time, each in its own process with one thread (default: one per core "
                        "on CPU, 1 on CUDA)")
    p.add_argument("--data", default=None, help="mnist:DIR to evaluate on MNIST's test split (default digits28)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where edge-popup trains")
    p.add_argument("--out", type=Path, default=Path("bench_out/exp2"), help="output directory")


def _finding(rows: list[dict], arch: str) -> list[list[Any]]:
    """Per sparsity: redundant (with ReLU, then without) minus wide, mean accuracy, Welch 95% interval."""
    wide = by_sparsity(rows, arch, "wide")
    out = []
    for relu in (True, False):
        for sparsity, group in by_sparsity(rows, arch, "redundant", relu).items():
            if sparsity not in wide:
                continue
            red, plain = [r["accuracy"] for r in group], [r["accuracy"] for r in wide[sparsity]]
            w = welch(red, plain)
            diff = statistics.mean(red) - statistics.mean(plain)
            verdict = "-" if w is None else ("redundant better" if w[1] > 0 else "wide better" if w[2] < 0
                                             else "equal on every seed" if w[1] == w[2] else "no difference resolved")
            out.append([arch, label("redundant", relu) + " - wide", f"{sparsity:g}", f"{100 * diff:+.2f}",
                        "-" if w is None else f"[{100 * w[1]:+.2f}, {100 * w[2]:+.2f}]", verdict])
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = _device(args.device)
    if args.quick:
        archs, sparsities, seeds, epochs, eps_list = (QUICK["archs"], QUICK["sparsities"], QUICK["seeds"],
                                                      QUICK["epochs"], QUICK["eps"])
    else:
        archs = args.archs.split(",") if args.archs else ARCHS
        unknown = [a for a in archs if a not in ARCHS]
        if unknown or args.epochs < 1 or args.seeds < 1:
            raise UsageError(f"need --archs from {ARCHS}, --epochs >= 1 and --seeds >= 1; got {args.archs!r}, "
                             f"{args.epochs}, {args.seeds}")
        sparsities, seeds, epochs, eps_list = SPARSITIES, list(range(args.seeds)), args.epochs, CONSTRUCT_EPS
    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"--jobs must be >= 1; got {args.jobs}")
    jobs = args.jobs or (1 if device == "cuda" else os.cpu_count() or 1)
    _, test = _datasets(args.data)
    start = time.perf_counter()
    tasks = [(arch, structure, relu, sparsity, seed, epochs, args.data)
             for arch in archs for structure, relu in VARIANTS for sparsity in sparsities for seed in seeds]
    rows = popup_rows(tasks, jobs, device)
    popup_s = time.perf_counter() - start
    for arch in archs:
        rows.extend(constructed_rows(arch, eps_list, test))
    args.out.mkdir(parents=True, exist_ok=True)
    figure = plot(rows, archs, args.out / "exp2.png")
    info = machine_info()
    table, finding = [], []
    for arch in archs:
        for structure, relu in VARIANTS:
            for sparsity, group in by_sparsity(rows, arch, structure, relu).items():
                accs = [r["accuracy"] for r in group]
                table.append([arch, label(structure, relu), f"{sparsity:g}", f"{group[0]['params']:,}",
                              f"{group[0]['kept']:,}", f"{100 * statistics.mean(accs):.2f}%",
                              f"{100 * statistics.stdev(accs):.2f}" if len(accs) > 1 else "-", len(accs)])
        for r in (r for r in rows if r["arch"] == arch and r["structure"] == "constructed"):
            table.append([arch, "constructed " + ("min-error" if r["eps"] is None else f"min-size eps {r['eps']:g}"),
                          "-", f"{r['params']:,}", f"{r['kept']:,}", f"{100 * r['accuracy']:.2f}%", "-", 1])
        finding += _finding(rows, arch)
    targets = {r["arch"]: r["target_accuracy"] for r in rows if r["structure"] == "constructed"}
    md = (f"# Experiment 2: edge-popup in redundant and wide random networks, and constructed tickets\n\n"
          f"Machine: {info['cpu']}, {info['cores']} cores, device {device}, {jobs} run(s) at a time. Command: "
          f"`{command_line()}`.\nEdge-popup: {epochs} epochs, SGD lr 0.1 momentum 0.9 weight decay 5e-4, cosine "
          f"schedule, batch 64, seeds {seeds}; sparsity = the pruned fraction of every layer (the fan-out "
          f"included); accuracy on {test.name}" + (" (quick mode: indicative)" if args.quick else "") + ". "
          "Targets (trained on digits28): " + ", ".join(f"{a} {100 * t:.2f}%" for a, t in targets.items()) + ".\n\n"
          + markdown_table(["arch", "network", "sparsity", "weights", "kept", "accuracy (mean)", "std (points)",
                            "seeds"], table)
          + "\n## The finding: redundant minus wide, per sparsity\n\nDifference of mean test accuracy in "
            "percentage points with a Welch t 95% interval over the seeds (the randomness of the network and of "
            "the batch order; the test split is fixed).\n\n"
          + markdown_table(["arch", "networks", "sparsity", "difference (points)", "95% interval", "verdict"], finding)
          + f"\n![exp2](exp2.png)\n\nTime: {time.perf_counter() - start:.0f} s (edge-popup {popup_s:.0f} s)\n")
    payload = {"machine": info, "command": command_line(), "device": device, "jobs": jobs, "epochs": epochs,
               "rows": rows, "finding": finding, "figure": figure, "seconds": time.perf_counter() - start}
    paths = write_outputs(args.out, "exp2", payload, md)
    print(md)
    print(f"wrote {paths['md']}, {paths['json']}, {args.out / 'exp2.png'}")
    return payload


def main(argv: list[str] | None = None) -> None:
    cli_main("lottery bench exp2", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    main()
