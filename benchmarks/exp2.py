"""The paper's Experiment 2, with this project's constructed tickets beside the trained ones.

Two ways to find a strong ticket of the same size class, side by side:

* found by training a mask (edge-popup, :mod:`models.popup`) in a random network with the
  construction's structure (``redundant``: each Linear as r = 5 fan-out units per input, ReLU,
  dense combine) and in a plain network widened to about the same number of weights (``wide``), at
  each sparsity (the pruned fraction of every layer), several seeds;
* constructed by subset sum (this project): the trained target (same architecture) built exactly,
  min-size at several eps and min-error, at n = 21.

Targets and training data: digits upsampled to 28x28 (no MNIST training split is available
offline; ``--data mnist:DIR`` evaluates on MNIST's test split where a user has it, but the targets
and masks are still trained on digits28). Accuracy is on the test split. Writes exp2.md, exp2.json
(rows: arch, structure, sparsity or eps, params, kept, accuracy, seed) and exp2.png (accuracy
against kept weights, one curve per structure with error bars over seeds, constructed tickets as
points).

    lottery bench exp2 --quick        # fc2 only, 3 sparsities, 1 seed, few epochs
    lottery bench exp2                # fc2, fc4, lenet5; 6 sparsities; 3 seeds
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from .common import cli_main, command_line, machine_info, markdown_table, new_figure, save_figure, write_outputs

SPARSITIES = [0.5, 0.75, 0.9, 0.95, 0.98, 0.99]
CONSTRUCT_EPS = [0.005, 0.01, 0.02, 0.05]
ARCHS = ["fc2", "fc4", "lenet5"]
SEEDS = [0, 1, 2]
EPOCHS = 10
QUICK = dict(archs=["fc2"], sparsities=[0.5, 0.9, 0.99], seeds=[0], epochs=3, eps=[0.01])


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
        raise ValueError("--device cuda: torch sees no CUDA device here")
    return name


def popup_row(arch: str, structure: str, sparsity: float, seed: int, epochs: int, train, test, device: str) -> dict:
    from models.popup import PopupNet, TrainSettings, accuracy, train_scores

    start = time.perf_counter()
    net = train_scores(PopupNet(arch, structure, sparsity, seed), train.x, train.y, TrainSettings(epochs=epochs),
                       seed, device)
    return {"arch": arch, "structure": structure, "sparsity": sparsity, "params": net.weights(), "kept": net.kept(),
            "accuracy": accuracy(net, test.x, test.y, device), "seed": seed, "seconds": time.perf_counter() - start}


def constructed_rows(arch: str, eps_list: list[float], test, n: int = 21) -> list[dict]:
    """The target built exactly at n: min-size at each eps and min-error; params = the structured
    random network's weights (fan-out and combine, as the redundant structure counts them)."""
    import torch

    from models.construct import ConstructOptions, construct
    from models.popup import accuracy

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


def by_sparsity(rows: list[dict], arch: str, structure: str) -> dict[float, list[dict]]:
    """The edge-popup rows of one arch and structure, grouped by sparsity (ascending): one row per seed."""
    groups: dict[float, list[dict]] = {}
    for r in sorted((r for r in rows if r["arch"] == arch and r["structure"] == structure), key=lambda r: r["sparsity"]):
        groups.setdefault(r["sparsity"], []).append(r)
    return groups


def plot(rows: list[dict], archs: list[str], path: Path) -> dict:
    plt, fig, axes = new_figure(1, len(archs), figsize=(6 * len(archs), 4.5), squeeze=False)
    for ax, arch in zip(axes[0], archs):
        for structure, marker in (("redundant", "o-"), ("wide", "s--")):
            xs, ys, errs = [], [], []
            for group in by_sparsity(rows, arch, structure).values():
                xs.append(statistics.mean(r["kept"] for r in group))
                accs = [r["accuracy"] for r in group]
                ys.append(statistics.mean(accs))
                errs.append(statistics.stdev(accs) if len(accs) > 1 else 0.0)
            if xs:
                ax.errorbar(xs, ys, yerr=errs, fmt=marker, capsize=3, label=f"edge-popup, {structure}")
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
    p.add_argument("--data", default=None, help="mnist:DIR to evaluate on MNIST's test split (default digits28)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where edge-popup trains")
    p.add_argument("--out", type=Path, default=Path("bench_out/exp2"), help="output directory")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from models.data import digits28, load_data

    device = _device(args.device)
    if args.quick:
        archs, sparsities, seeds, epochs, eps_list = (QUICK["archs"], QUICK["sparsities"], QUICK["seeds"],
                                                      QUICK["epochs"], QUICK["eps"])
    else:
        archs = args.archs.split(",") if args.archs else ARCHS
        unknown = [a for a in archs if a not in ARCHS]
        if unknown or args.epochs < 1 or args.seeds < 1:
            raise ValueError(f"need --archs from {ARCHS}, --epochs >= 1 and --seeds >= 1; got {args.archs!r}, "
                             f"{args.epochs}, {args.seeds}")
        sparsities, seeds, epochs, eps_list = SPARSITIES, list(range(args.seeds)), args.epochs, CONSTRUCT_EPS
    train = digits28("train")
    test = load_data(args.data) if args.data else digits28("test")
    start = time.perf_counter()
    rows = []
    for arch in archs:
        for structure in ("redundant", "wide"):
            for sparsity in sparsities:
                for seed in seeds:
                    rows.append(popup_row(arch, structure, sparsity, seed, epochs, train, test, device))
                    r = rows[-1]
                    print(f"{arch} {structure} sparsity {sparsity:g} seed {seed}: accuracy {r['accuracy']:.4f} "
                          f"({r['seconds']:.0f} s)", file=sys.stderr, flush=True)
        rows.extend(constructed_rows(arch, eps_list, test))
    args.out.mkdir(parents=True, exist_ok=True)
    figure = plot(rows, archs, args.out / "exp2.png")
    info = machine_info()
    table = []
    for arch in archs:
        for structure in ("redundant", "wide"):
            for sparsity, group in by_sparsity(rows, arch, structure).items():
                accs = [r["accuracy"] for r in group]
                table.append([arch, structure, f"{sparsity:g}", f"{group[0]['params']:,}", f"{group[0]['kept']:,}",
                              f"{100 * statistics.mean(accs):.2f}%",
                              f"{100 * statistics.stdev(accs):.2f}" if len(accs) > 1 else "-", len(accs)])
        for r in (r for r in rows if r["arch"] == arch and r["structure"] == "constructed"):
            table.append([arch, "constructed " + ("min-error" if r["eps"] is None else f"min-size eps {r['eps']:g}"),
                          "-", f"{r['params']:,}", f"{r['kept']:,}", f"{100 * r['accuracy']:.2f}%", "-", 1])
    md = (f"# Experiment 2: edge-popup in redundant and wide random networks, and constructed tickets\n\n"
          f"Machine: {info['cpu']}, {info['cores']} cores, device {device}. Command: `{command_line()}`.\n"
          f"Edge-popup: {epochs} epochs, SGD lr 0.1 momentum 0.9 weight decay 5e-4, cosine schedule, batch 64, "
          f"seeds {seeds}; accuracy on {test.name}" + (" (quick mode: indicative)" if args.quick else "") + ".\n\n"
          + markdown_table(["arch", "structure", "sparsity", "weights", "kept", "accuracy (mean)", "std (points)",
                            "seeds"], table) + f"\n![exp2](exp2.png)\n\nTime: {time.perf_counter() - start:.0f} s\n")
    payload = {"machine": info, "command": command_line(), "device": device, "epochs": epochs, "rows": rows,
               "figure": figure}
    paths = write_outputs(args.out, "exp2", payload, md)
    print(md)
    print(f"wrote {paths['md']}, {paths['json']}, {args.out / 'exp2.png'}")
    return payload


def main(argv: list[str] | None = None) -> None:
    cli_main("lottery bench exp2", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    main()
