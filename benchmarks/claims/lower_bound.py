"""Claim 2, the lower bound: the tight optimum 1/(2^m - 1) and the d x d counting bound."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np

from solver.theory import sup_error

from ..common import markdown_table
from .shared import claim_doc, draw, pyplot, save_plot


def tight_bound(m: int) -> float:
    """The least sup error over [-1, 1] any m coefficients can have: 1 / (2^m - 1).

    0 is always a subset sum (the empty subset), so of the at most 2^m sums, k lie below 0 and at
    most 2^m - 1 - k above; covering [-1, -r) with k intervals of length 2r needs r >= 1/(2k + 1),
    and (r, 1] likewise, so r >= 1/(2^m - 1) (k = 2^(m-1) - 1 balances the two sides)."""
    return 1.0 / (2.0 ** m - 1.0)


def geometric_set(m: int) -> np.ndarray:
    """The signed geometric set attaining :func:`tight_bound`: h = 2/(2^m - 1), coefficients -h,
    -2h, ..., -2^(m-2) h and +2^(m-1) h; the sums are every multiple of h from -(2^(m-1) - 1) h to
    2^(m-1) h, spaced h, the first h/2 inside -1 and the last h/2 beyond 1 ({-2/7, -4/7, 8/7} for m = 3)."""
    h = 2.0 / (2.0 ** m - 1.0)
    return np.array([[-h * 2.0 ** k for k in range(m - 1)] + [h * 2.0 ** (m - 1)]])


def local_search(m: int, rng: np.random.Generator, steps: int, restarts: int) -> tuple[np.ndarray, float]:
    """Minimise the sup error over [-1, 1] by random perturbation (accept improvements), from
    random starts and from a perturbed geometric set."""
    best_c, best = None, math.inf
    for r in range(restarts):
        c = geometric_set(m)[0] * (1 + 0.05 * rng.normal(size=m)) if r == 0 else rng.uniform(-1, 1, m)
        cur = float(sup_error(c[None], -1, 1, threads=1)[0])
        scale = 0.1
        for _ in range(steps):
            cand = c + scale * rng.normal(size=(16, m)) * (rng.random((16, m)) < 0.3)
            errs = sup_error(cand, -1, 1, threads=1)
            k = int(np.argmin(errs))
            if errs[k] < cur:
                c, cur = cand[k], float(errs[k])
            else:
                scale *= 0.9
            if scale < 1e-7:
                scale = 0.05
        if cur < best:
            best_c, best = c, cur
    return best_c, best


def ball_targets(d: int, count: int, seed: int) -> list[np.ndarray]:
    """d x d targets of spectral norm 1 (the operator-norm ball's boundary): Gaussian matrices
    normalised, a rank-one matrix with entries +-1/d (sign pattern random), the identity and a
    permutation (entries up to 1: the largest a matrix of the ball has)."""
    rng = np.random.default_rng(seed)
    out = [np.eye(d), np.eye(d)[rng.permutation(d)]]
    u, v = rng.choice([-1.0, 1.0], d), rng.choice([-1.0, 1.0], d)
    out.append(np.outer(u, v) / d)
    while len(out) < count:
        g = rng.normal(size=(d, d))
        out.append(g / np.linalg.norm(g, 2))
    return out[:count]


#: float64 rounding of subset sums of O(1) coefficients (absolute): a few ulps of 1
ROUNDING = 1e-15
#: the one random network's B scale for every target of the ball (|w| <= 1): the default margin 1.5
BALL_SCALE = 1.5


def ball_width(d: int, eps: float, seed: int, n_max: int, targets: int) -> dict[str, Any]:
    """Smallest n for which ONE random d x d pair (seeded, B scale fixed, not fitted to a target)
    approximates every target of :func:`ball_targets` within eps in operator norm (min-error,
    inputs >= 0); its total parameters against the counting bound d^2 log2(1/eps)."""
    import torch

    from models.construct import ConstructOptions, construct
    from models.problems import kept_sums

    mats = ball_targets(d, targets, seed)
    nets = []
    for W in mats:
        layer = torch.nn.Linear(d, d, bias=False)
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(W))
        nets.append(torch.nn.Sequential(layer).eval())
    worst = math.inf
    for n in range(1, n_max + 1):
        options = ConstructOptions.from_kwargs(n=n, objective="min-error", seed=seed, progress=False,
                                               scales={"0": BALL_SCALE}, workers=1)
        worst = 0.0
        for W, net in zip(mats, nets):
            c = construct(net, (d,), (0.0, 1.0), options)
            spec, sol = c.specs[0], c.solutions[0]
            S = kept_sums(spec, sol.masks)[0][0].reshape(d, d).numpy()
            worst = max(worst, float(np.linalg.norm(S - W, 2)))
            if worst > eps:
                break
        if worst <= eps:
            total = c.specs[0].dense_params()
            bits = d * d * math.log2(1 / eps)
            return {"d": d, "eps": eps, "n": n, "targets": len(mats), "worst_operator_error": worst,
                    "total_params": total, "counting_bound": bits, "total_ratio": total / bits}
    return {"d": d, "eps": eps, "n": None, "targets": len(mats), "worst_operator_error": worst, "n_max": n_max}


def _figure(ms: list[int], tight: list[dict], seeds: int, epsilons: list[float], layers: list[dict], path: Path) -> dict:
    """Sup errors against the optimum, and the d x d pairs against the counting bound; returns the plotted series."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    axes[0].semilogy(ms, [t["bound"] for t in tight], "k-", label="optimum 1/(2^m - 1)")
    axes[0].semilogy(ms, [t["geometric_sup_error"] for t in tight], "o", mfc="none", label="signed geometric set")
    axes[0].semilogy(ms, [t["best_sup_error"] for t in tight], "x", label="best set tried")
    axes[0].semilogy(ms, [t["random_uniform_min"] for t in tight], ".", label=f"best of {seeds} random U[-1,1] sets")
    axes[0].set_xlabel("m (coefficients)")
    axes[0].set_ylabel("sup error over [-1, 1]")
    axes[0].legend(fontsize=8)
    for eps in epsilons:
        pts = [(l["d"], l["total_ratio"]) for l in layers if l["eps"] == eps and l["n"]]
        if pts:
            axes[1].plot([p[0] for p in pts], [p[1] for p in pts], "o-",
                         label=f"random pair's total parameters / (d^2 log2(1/eps)), eps={eps:g}")
    axes[1].set_xscale("log", base=2)
    axes[1].set_yscale("log")
    axes[1].set_xlabel("d (d x d layer)")
    axes[1].set_ylabel("total parameters / counting bound")
    axes[1].legend(fontsize=7)
    return save_plot(plt, fig, axes, path)


def claim_lower_bound(args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)
    ms = list(range(1, 11)) if args.quick else list(range(1, 19))
    seeds = 30 if args.quick else 200
    search_up_to = 8 if args.quick else 12
    tight, rows = [], []
    for m in ms:
        bound = tight_bound(m)
        geometric = float(sup_error(geometric_set(m), -1, 1)[0])
        tried = {"uniform": float(sup_error(draw(rng, "uniform", seeds, m), -1, 1).min()),
                 "product": float(sup_error(draw(rng, "product", seeds, m), -1, 1).min())}
        if m <= search_up_to:
            tried["search"] = local_search(m, rng, 40 if args.quick else 300, 2 if args.quick else 4)[1]
        best = min(min(tried.values()), geometric)
        tight.append({"m": m, "best_sup_error": best, "geometric_sup_error": geometric, "bound": bound,
                      "random_uniform_min": tried["uniform"], "random_product_min": tried["product"],
                      "search": tried.get("search")})
        rows.append([m, f"{bound:.6g}", f"{geometric:.6g}", f"{geometric / bound:.12f}",
                     f"{tried['uniform'] / bound:.4g}", f"{tried['product'] / bound:.4g}",
                     f"{tried['search'] / bound:.4g}" if "search" in tried else "not run", f"{best / bound:.12f}"])
    # the sums are O(1) in float64: equal means within ROUNDING absolute (a few ulps), at every m
    beaten = [t["m"] for t in tight if t["best_sup_error"] < t["bound"] - ROUNDING]
    attained = all(abs(t["geometric_sup_error"] - t["bound"]) <= ROUNDING for t in tight)

    ds = [4, 8] if args.quick else [4, 8, 16, 32]
    epsilons = [0.2] if args.quick else [0.2, 0.1, 0.05]
    targets = 4 if args.quick else 8
    layers = [ball_width(d, eps, args.seed, 24, targets) for d in ds for eps in epsilons]

    figure = _figure(ms, tight, seeds, epsilons, layers, args.out / "lower-bound.png")

    built = [l for l in layers if l["n"]]
    verdict = (("lower-bound (quick, indicative): " if args.quick else "lower-bound: ")
               + f"for m = {ms[0]}..{ms[-1]} the signed geometric set attains 1/(2^m - 1) "
               f"{'at every m (to 1e-15 absolute, float64 rounding)' if attained else 'NOT at every m'}; no set tried ({len(ms) * 2 * seeds} random "
               f"sets and searched ones) beat it ({'none' if not beaten else f'BEATEN at m = {beaten}'}); one random "
               f"d x d pair covering {targets} targets of the operator-norm ball within eps needs total parameters "
               + (f"{min(l['total_ratio'] for l in built):.3g}-{max(l['total_ratio'] for l in built):.3g} x "
                  f"d^2 log2(1/eps) for d in {ds}, eps in {epsilons}" if built else "beyond n = 24 in every cell"))
    md = claim_doc("Claim 2: the lower bound, tight", args, verdict,
              "0 is always a subset sum, so m coefficients leave some target of [-1, 1] at least 1/(2^m - 1) from "
              "every sum (not 2^-m: see `tight_bound`); the signed geometric set (-h, -2h, ..., -2^(m-2) h, "
              "+2^(m-1) h with h = 2/(2^m - 1)) attains it. Columns: the optimum, the geometric set's exact sup "
              "error and its ratio to the optimum, the best random sets' and the local search's ratios, and the best "
              "of all (>= 1 means not beaten).",
              markdown_table(["m", "optimum", "geometric set", "geometric / optimum", "random U / optimum",
                              "random products / optimum", "search / optimum", "best / optimum"], rows)
              + "\n### d x d layers: the counting bound as the theorem states it\n\n"
                "One random network must approximate every d x d target of spectral norm <= 1 within eps in "
                "operator norm; the operator-norm ball needs (1/eps)^(d^2) balls of radius eps to cover, so its "
                "subnetworks (2^total parameters) are at least that many: total >= d^2 log2(1/eps). Measured: the "
                f"smallest n for which one seeded pair (B ~ U[-{BALL_SCALE:g}, {BALL_SCALE:g}], the same for every "
                f"target) brings each of {targets} targets (identity, a permutation, a +-1/d rank-one matrix, normalised "
                "Gaussians) within eps in operator norm (min-error), and the pair's total parameters over d^2 log2(1/eps): "
                "how far the construction is from the counting bound (the bound counts total parameters, not kept ones).\n\n"
              + markdown_table(["d", "eps", "n", "worst operator-norm error", "total parameters", "d^2 log2(1/eps)",
                                "total / bound"],
                               [[l["d"], l["eps"], l["n"] or f"> {l['n_max']}", f"{l['worst_operator_error']:.3g}",
                                 l.get("total_params", "-"), f"{l['d'] ** 2 * math.log2(1 / l['eps']):.0f}",
                                 f"{l['total_ratio']:.3g}" if l["n"] else "-"] for l in layers]),
              "lower-bound.png")
    return {"verdict": verdict, "tight": tight, "beaten": beaten, "geometric_attains": attained, "layers": layers,
            "figure": figure, "markdown": md}
