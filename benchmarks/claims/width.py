"""Claim 3, logarithmic width, in the theorem's units."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..common import markdown_table
from ..inference import least_squares
from .shared import claim_doc, pyplot, save_plot
from .lower_bound import BALL_SCALE

#: width: cells (d, l, eps), targets per cell, the largest n scanned, ball samples (full / quick)
WIDTH_DS, WIDTH_LS, WIDTH_EPS = [8, 16, 32], [2, 3, 4], [1e-2, 3e-3, 1e-3]
WIDTH_TARGETS, WIDTH_N_MAX, WIDTH_SAMPLES = 10, 28, 512
QUICK_WIDTH = dict(ds=[4, 8, 16], ls=[2], eps=[1e-2, 0.7], targets=3, samples=128)  # 0.7: some trivial


def orthogonal_mlp(d: int, depth: int, seed: int):
    """depth Linear layers d -> d (no biases), ReLU between, each weight a Haar-random orthogonal
    matrix: spectral norm 1, the largest the theorem allows, and no direction shrunk."""
    import torch

    from models.zoo import mlp

    gen = torch.Generator().manual_seed(seed)
    net = mlp([d] * (depth + 1), biases=False)
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, torch.nn.Linear):
                q, r = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
                mod.weight.copy_(q * torch.sign(torch.diagonal(r)))  # Haar: the signs of R's diagonal moved to Q
    return net.eval()


def ball_samples(d: int, count: int, seed: int):
    """``count`` points uniform in the unit ball of R^d (float64), and the ball's two poles +-e_1."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(count, d, generator=gen, dtype=torch.float64)
    x = x / x.norm(dim=1, keepdim=True) * torch.rand(count, 1, generator=gen, dtype=torch.float64) ** (1.0 / d)
    poles = torch.zeros(2, d, dtype=torch.float64)
    poles[0, 0], poles[1, 0] = 1.0, -1.0
    return torch.cat([poles, x])


def smallest_n(target, x, f, eps: float, seed: int, n_max: int, start: int) -> tuple[int | None, Any, float]:
    """The smallest n (scanned from ``start``: down while it passes, up while it fails) whose pruned
    network is within eps of the target (``f``: its float64 outputs on x) on every input of x (sup over
    outputs), with the one random network of this seed and B scale (the same for every target); the
    construction at that n (the last tried if none passes) and its error."""
    import torch

    from models.construct import ConstructOptions, construct

    d = x.shape[1]
    names = [name for name, m in target.named_modules() if isinstance(m, torch.nn.Linear)]
    cache: dict[int, tuple[float, Any]] = {}

    def error(n: int) -> float:
        if n not in cache:
            options = ConstructOptions.from_kwargs(n=n, seed=seed, progress=False, workers=1,
                                                   scales={k: BALL_SCALE for k in names})
            c = construct(target, (d,), (-1.0, 1.0), options)
            with torch.no_grad():
                cache[n] = (float((f - c.pruned(x)).abs().max()), c)
        return cache[n][0]

    n = max(1, min(start, n_max))
    if error(n) <= eps:
        while n > 1 and error(n - 1) <= eps:
            n -= 1
        return n, cache[n][1], cache[n][0]
    while n < n_max:
        n += 1
        if error(n) <= eps:
            return n, cache[n][1], cache[n][0]
    return None, cache[n][1], cache[n][0]


def _figure(points: list[dict], fit: dict, path: Path) -> dict:
    """The smallest n and the certified bound's looseness against log2(d l / eps); returns the plotted series."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    xs = [math.log2(p["d"] * p["l"] / p["eps"]) for p in points]
    axes[0].plot(xs, [p["n"] for p in points], "o", alpha=0.5, label="smallest n per target")
    if fit["r2"] is not None:
        pred = [fit["coef_log2_d"] * math.log2(p["d"]) + fit["coef_log2_l"] * math.log2(p["l"])
                + fit["coef_log2_inv_eps"] * math.log2(1 / p["eps"]) + fit["intercept"] for p in points]
        axes[0].plot(xs, pred, "x", label=f"multivariate fit (R^2 = {fit['r2']:.2f})")
    axes[0].set_xlabel("log2(d l / eps)")
    axes[0].set_ylabel("smallest n with sup error <= eps on the ball samples")
    axes[0].legend(fontsize=8)
    axes[1].semilogy(xs, [p["certified_bound"] / p["observed"] for p in points], "o", alpha=0.5,
                     label="certified bound (box [-1,1]^d) / observed error (ball)")
    axes[1].set_xlabel("log2(d l / eps)")
    axes[1].legend(fontsize=8)
    return save_plot(plt, fig, axes, path)


def _fit(points: list[dict], seeds_per_cell: int, quick: bool) -> dict[str, Any]:
    """Least squares of n on log2 d, log2 l and log2(1/eps) over the targets (5 or more; none in quick
    mode: every coefficient None)."""
    fit: dict[str, Any] = {"coef_log2_d": None, "coef_log2_l": None, "coef_log2_inv_eps": None, "intercept": None,
                           "r2": None, "seeds_per_cell": seeds_per_cell, "points": len(points)}  # None: no fit
    if len(points) >= 5 and not quick:  # quick mode fits nothing
        ls = least_squares({"log2_d": np.log2([p["d"] for p in points]), "log2_l": np.log2([p["l"] for p in points]),
                            "log2_inv_eps": np.log2([1 / p["eps"] for p in points])},
                           np.array([p["n"] for p in points], dtype=float))
        fit.update(coef_log2_d=ls["coef"]["log2_d"], coef_log2_l=ls["coef"]["log2_l"],
                   coef_log2_inv_eps=ls["coef"]["log2_inv_eps"], intercept=ls["intercept"], r2=ls["r2"], ci95=ls["ci95"])
    return fit


def claim_width(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from models.verify import certified

    q = QUICK_WIDTH if args.quick else dict(ds=WIDTH_DS, ls=WIDTH_LS, eps=WIDTH_EPS, targets=WIDTH_TARGETS,
                                               samples=WIDTH_SAMPLES)
    points, cells = [], []
    for d in q["ds"]:
        x = ball_samples(d, q["samples"], args.seed)
        for depth in q["ls"]:
            targets = [orthogonal_mlp(d, depth, 1000 * depth + t) for t in range(q["targets"])]
            with torch.no_grad():
                outputs = [t.double()(x) for t in targets]
            reach = [float(f.abs().max()) for f in outputs]
            for eps in q["eps"]:
                cell = {"d": d, "l": depth, "eps": eps, "targets": len(targets), "trivial": 0, "n": [],
                        "not_reached": 0, "looseness": [], "malach_d4_l2": d ** 4 * depth ** 2,
                        "theorem_log2_dl_over_eps": math.log2(d * depth / eps)}
                start = max(1, round(math.log2(d * depth / eps)))
                for t, target in enumerate(targets):
                    if reach[t] <= eps:  # the all-pruned network (output 0) is already within eps
                        cell["trivial"] += 1
                        continue
                    n, c, observed = smallest_n(target, x, outputs[t], eps, args.seed, WIDTH_N_MAX, start)
                    if n is None:
                        cell["not_reached"] += 1
                        continue
                    start = n
                    bound = certified(c).bound
                    cell["n"].append(n)
                    cell["looseness"].append(bound / max(observed, 1e-300))
                    points.append({"d": d, "l": depth, "eps": eps, "target": t, "n": n, "observed": observed,
                                   "certified_bound": bound, "reach": reach[t]})
                cells.append(cell)
    fit = _fit(points, q["targets"], args.quick)

    figure = _figure(points, fit, args.out / "width.png")

    trivial = sum(c["trivial"] for c in cells)
    missing = sum(c["not_reached"] for c in cells)
    if fit["r2"] is not None:
        ci = fit["ci95"]
        fitted = (f"n = {fit['coef_log2_d']:.2f} log2 d + {fit['coef_log2_l']:.2f} log2 l + "
                  f"{fit['coef_log2_inv_eps']:.2f} log2(1/eps) + {fit['intercept']:.2f} (95% CIs "
                  f"[{ci['log2_d'][0]:.2f}, {ci['log2_d'][1]:.2f}], [{ci['log2_l'][0]:.2f}, {ci['log2_l'][1]:.2f}], "
                  f"[{ci['log2_inv_eps'][0]:.2f}, {ci['log2_inv_eps'][1]:.2f}]; R^2 = {fit['r2']:.3f}) over "
                  f"{len(points)} targets")
    else:
        fitted = f"{len(points)} targets, no fit" + (" (quick mode)" if args.quick else "")
    loose = [v for c in cells for v in c["looseness"]]
    verdict = (("width (quick, indicative): " if args.quick else "width: ") + fitted
               + (f"; certified bound / observed error median {np.median(loose):.3g} (range {min(loose):.3g}-"
                  f"{max(loose):.3g})" if loose else "")
               + f"; {trivial} trivial targets excluded, {missing} not reached by n = {WIDTH_N_MAX}")
    rows = [[c["d"], c["l"], f"{c['eps']:g}", c["targets"], c["trivial"], c["not_reached"],
             f"{np.median(c['n']):g}" if c["n"] else "-", f"{min(c['n'])}-{max(c['n'])}" if c["n"] else "-",
             f"{c['theorem_log2_dl_over_eps']:.1f}", f"{2 * np.median(c['n']) * c['d']:g}" if c["n"] else "-",
             f"{c['malach_d4_l2']:.3g}", f"{np.median(c['looseness']):.3g}" if c["looseness"] else "-"] for c in cells]
    md = claim_doc("Claim 3: logarithmic width, in the theorem's units", args, verdict,
              f"Targets as the theorem takes them: depth l ReLU MLPs d -> d, no biases, every weight a Haar-random "
              f"orthogonal matrix (spectral norm 1); inputs of norm <= 1 ({q['samples']} uniform samples of the unit "
              f"ball and its poles +-e_1). One random network per cell for all its {q['targets']} targets (seed "
              f"{args.seed}, B ~ U[-{BALL_SCALE:g}, {BALL_SCALE:g}] fixed, not fitted to a target); per target the "
              f"smallest n whose pruned network is within eps of it on every sample (sup over outputs; min-error "
              f"weights). A target whose own outputs stay within eps on the samples is trivial (the all-pruned network "
              f"passes) and excluded. The fit is least squares of n on log2 d, log2 l and log2(1/eps) over the "
              f"targets (t intervals; targets of one cell share a random network, so they are not independent). "
              f"Width of the random network: 2 n d hidden units per layer (fan-out), beside Malach et al.'s d^4 l^2 "
              f"(their order; constants and the eps dependence omitted). Looseness: the certified bound over the box "
              f"[-1, 1]^d (which contains the ball) over the observed error at that n. The observed error is a maximum "
              f"over samples, a lower bound on the sup over the ball; in higher d uniform samples meet the typical "
              f"rather than the worst direction of the error, which flattens n's growth in d (the bound does not).",
              markdown_table(["d", "l", "eps", "targets", "trivial", "not reached", "median n", "n range",
                              "log2(d l / eps)", "random width 2 n d", "d^4 l^2", "bound / observed"], rows),
              "width.png")
    return {"verdict": verdict, "fit": fit, "cells": cells, "points": points, "figure": figure, "markdown": md}
