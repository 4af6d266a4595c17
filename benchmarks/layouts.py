"""Sign layouts: how often does a weight's exact optimum miss eps, with random product signs
(``fixed-sign``) and with half the products of every weight positive (``balanced``)?

1. Weight-like targets (N(0, 0.25^2) clipped to [-1, 1], the layer's largest |w| mapped to 1)
   against m = n = 21 coefficients u v with u ~ U(0, 1] and v ~ U[-1.5, 1.5] (the default scale
   margin 1.5; a layer after a ReLU): the fraction whose min-error optimum is above eps, with
   exact 95% Clopper-Pearson intervals.
2. Trained networks (the Experiment 1 MLP 784-500-10 and a LeNet-5, both trained on digits
   upsampled to 28x28): weights whose error is above eps after an exact min-error construction
   with n = 21, and the pruned network's test accuracy and argmax agreement.

Writes layouts.md, layouts.json and layouts.png.

    lottery bench layouts             # 10^6 problems per layout and both networks (minutes)
    lottery bench layouts --quick     # 10^5 problems, the LeNet-5 only
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import solver

from .common import cli_main, command_line, machine_info, markdown_table, new_figure, save_figure, write_outputs
from .inference import clopper_pearson

LAYOUTS = ("fixed-sign", "balanced")
MARGIN = 1.5


def coefficients(rng: np.random.Generator, count: int, m: int, layout: str) -> np.ndarray:
    """u v with u ~ U(0, 1], v ~ U[-MARGIN, MARGIN]; balanced: the first ceil(m/2) products positive."""
    u = 1.0 - rng.random((count, m))
    v = rng.uniform(-MARGIN, MARGIN, (count, m))
    if layout == "balanced":
        v = np.abs(v) * np.where(np.arange(m) < (m + 1) // 2, 1.0, -1.0)
    return u * v


def synthetic(count: int, m: int, eps: float, seed: int) -> list[dict[str, Any]]:
    from .common import weight_like_targets

    rows = []
    for layout in LAYOUTS:
        rng = np.random.default_rng(seed)
        t = weight_like_targets(rng, count)
        misses, start = 0, time.perf_counter()
        for i in range(0, count, 200_000):
            c = coefficients(rng, min(200_000, count - i), m, layout)
            res = solver.solve(t[i:i + len(c)], c, "min-error", backend="mitm", workers=None, progress=False)
            misses += int((res.errors > eps).sum())
        low, high = clopper_pearson(misses, count)
        rows.append({"layout": layout, "problems": count, "m": m, "eps": eps, "misses": misses,
                     "miss_rate": misses / count, "ci95": [low, high], "seconds": time.perf_counter() - start})
        print(f"synthetic {layout}: {misses} of {count} miss eps", file=sys.stderr, flush=True)
    return rows


def network(name: str, n: int, eps: float, seed: int) -> list[dict[str, Any]]:
    from models.construct import ConstructOptions, construct
    from models.data import digits28
    from models.default import cached_digits_lenet5
    from models.report import eps_coverage
    from models.target import load_target
    from models.verify import verify

    if name == "lenet5":
        target = load_target(cached_digits_lenet5(), "lenet5")
        shape = (1, 28, 28)
    else:
        from .exp1 import exp1_network

        target = exp1_network()
        shape = (1, 28, 28)  # the data's shape; the MLP flattens it first
    data = digits28("test")
    rows = []
    for layout in LAYOUTS:
        options = ConstructOptions.from_kwargs(n=n, layout=layout, seed=seed, eps=eps, backend="mitm", progress=False)
        c = construct(target, shape, (0.0, 1.0), options)
        check = verify(c, data)
        cov = eps_coverage(c)
        rows.append({"network": name, "layout": layout, "n": n, "eps": eps, "weights": cov["weights_within_eps"]
                     + cov["weights_missing_eps"], "misses": cov["weights_missing_eps"],
                     "max_weight_error": max(s.error_summary()[0] for s in c.solutions),
                     "worst_missing": cov["worst_missing"][:3], "accuracy": check.accuracy,
                     "agreement": check.agreement, "max_output_error": check.max_output_error,
                     "kept_params": sum(s.kept() for s in c.solutions)})
        print(f"{name} {layout}: {cov['weights_missing_eps']} weights miss eps", file=sys.stderr, flush=True)
    return rows


def plot(synth: list[dict[str, Any]], path: Path) -> dict:
    plt, fig, ax = new_figure(figsize=(5.5, 4))
    x = np.arange(len(synth))
    rates = [r["miss_rate"] for r in synth]
    low = [r["miss_rate"] - r["ci95"][0] for r in synth]
    high = [r["ci95"][1] - r["miss_rate"] for r in synth]
    ax.errorbar(x, rates, yerr=[low, high], fmt="none", capsize=6, ecolor="C0")  # the 95% intervals
    ax.plot(x, rates, "o", color="C0", label="miss rate (95% CI)")
    ax.set_xticks(x, [r["layout"] for r in synth])
    ax.set_yscale("symlog", linthresh=1e-7)
    ax.set_ylabel(f"P(min-error optimum > eps = {synth[0]['eps']:g})")
    ax.set_title(f"{synth[0]['problems']:,} weight-like targets, m = {synth[0]['m']}")
    ax.legend()
    return save_figure(plt, fig, path)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="10^5 problems and the LeNet-5 only (a minute)")
    p.add_argument("--problems", type=int, help="synthetic problems per layout (default 10^6, quick 10^5)")
    p.add_argument("--n", type=int, default=21, help="coefficients per problem (default 21)")
    p.add_argument("--eps", type=float, default=0.01, help="the error that counts as a miss (default 0.01)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic problems and random networks")
    p.add_argument("--out", type=Path, default=Path("bench_out/layouts"), help="output directory")


def run(args: argparse.Namespace) -> dict[str, Any]:
    count = args.problems or (10**5 if args.quick else 10**6)
    synth = synthetic(count, args.n, args.eps, args.seed)
    nets = [row for name in (["lenet5"] if args.quick else ["mlp", "lenet5"])
            for row in network(name, args.n, args.eps, args.seed)]
    args.out.mkdir(parents=True, exist_ok=True)
    figure = plot(synth, args.out / "layouts.png")
    info = machine_info()
    md = [
        "# Sign layouts: weights whose exact optimum misses eps\n",
        f"Command: `{command_line()}`  \n",
        f"Machine: {info['cpu']}, {info['cores']} cores; torch {info['torch']}, numba {info['numba']}\n",
        f"\n## Weight-like targets, m = {args.n}, eps = {args.eps} (seed {args.seed})\n",
        markdown_table(["layout", "problems", "miss eps", "rate", "95% CI (exact)"],
                       [[r["layout"], f"{r['problems']:,}", r["misses"], f"{r['miss_rate']:.2e}",
                         f"[{r['ci95'][0]:.2e}, {r['ci95'][1]:.2e}]"] for r in synth]),
        f"\n## Trained networks, exact min-error construction, n = {args.n}, eps = {args.eps}\n",
        markdown_table(["network", "layout", "weights", "miss eps", "max weight error", "accuracy target -> pruned",
                        "agreement", "kept params"],
                       [[r["network"], r["layout"], f"{r['weights']:,}", r["misses"], f"{r['max_weight_error']:.3g}",
                         f"{100 * r['accuracy']['target']:.2f}% -> {100 * r['accuracy']['pruned']:.2f}%",
                         f"{100 * r['agreement']:.2f}%", f"{r['kept_params']:,}"] for r in nets]),
        "\n![miss rates](layouts.png)\n",
    ]
    payload = {"machine": info, "command": command_line(), "synthetic": synth, "networks": nets, "figure": figure}
    paths = write_outputs(args.out, "layouts", payload, "".join(md))
    print("".join(md))
    print(f"wrote {paths['md']}, {paths['json']}, {args.out / 'layouts.png'}")
    return payload


def main(argv: list[str] | None = None) -> None:
    cli_main("lottery bench layouts", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    main()
