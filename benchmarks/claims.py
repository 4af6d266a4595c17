"""`lottery claims <name>`: test the paper's claims with exact computations (see docs/benchmarks.md, "Testing the theory").

* ``subset-sum``: random subset sum with high probability. For U[-1, 1], the construction's
  products and Experiment 1's coefficients: the exact sup error over targets in [-1, 1], the
  smallest m with P(sup error <= eps) >= 1 - delta certified by Clopper-Pearson intervals (3000
  seeds at every m), range and resolution failures apart, fits of m against log2(1/eps) with
  intervals, the slope of log2(median sup error) per coefficient.
* ``lower-bound``: the tight optimum 1/(2^m - 1) (0 is always a subset sum), attained by signed
  geometric sets and beaten by no set tried; the d x d counting bound as the theorem states it
  (one random network for every target of the operator-norm ball; total parameters).
* ``width``: the theorem's units (spectral norm 1 targets, inputs of norm <= 1, one random network
  per cell, 10 targets per cell, trivial targets excluded): the smallest n against log2 d, log2 l
  and log2(1/eps) in one multivariate fit with R^2, the certified bound's looseness, Malach et al.'s
  d^4 l^2 beside the random width.
* ``coverage``: the construction's per-weight failure probability against n at Experiment 1's eps,
  and what it says about covering all 397,000 weights at n = 21.

Every command writes NAME.json, NAME.md and NAME.png into --out and prints one verdict line
that states what was measured, with intervals. ``--quick`` runs in seconds (the tests use it),
says it is indicative and fits nothing.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from solver.theory import sup_error, sup_error_prefixes

from .common import cli_main, command_line, machine_info, markdown_table, save_figure, write_outputs
from .inference import bracket_slopes, clopper_pearson, deciding_m, least_squares

EPSILONS = [1e-1, 1e-2, 1e-3, 1e-4]
#: subset-sum: eps, delta (P(sup error <= eps) >= 1 - delta), seeds and the largest m (full / quick)
SUBSET_EPS = [0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001]
DELTAS = [0.5, 0.1, 0.01]
SUBSET_SEEDS, SUBSET_M = 3000, 22
QUICK_SEEDS, QUICK_M = 400, 14
#: the construction's default product scale (--scale-policy max, margin 1.5): |c| = 1.5 u b
PRODUCT_MARGIN = 1.5
DISTRIBUTIONS = ("uniform", "product", "exp1")


def draw(rng: np.random.Generator, dist: str, count: int, m: int,
         exp1_range: tuple[float, float] | None = None) -> np.ndarray:
    """(count, m) coefficients in the units where targets lie in [-1, 1]:

    * ``uniform``: U[-1, 1];
    * ``product``: the construction's default (balanced layout, scale margin 1.5): 1.5 u b with u, b
      ~ U[0, 1], positive for even index and negative for odd (every prefix is balanced);
    * ``exp1``: the paper's Experiment 1, uniform over the target's weight range, scaled by the
      largest |weight| (``exp1_range``: (min, max) / max |w|).
    """
    if dist == "uniform":
        return rng.uniform(-1, 1, (count, m))
    if dist == "product":
        signs = np.where(np.arange(m) % 2 == 0, 1.0, -1.0)
        return PRODUCT_MARGIN * rng.uniform(0, 1, (count, m)) * rng.uniform(0, 1, (count, m)) * signs
    if dist == "exp1":
        if exp1_range is None:
            raise ValueError("the exp1 distribution needs the target's weight range")
        return rng.uniform(exp1_range[0], exp1_range[1], (count, m))
    raise ValueError(f"unknown distribution {dist!r}; expected one of {DISTRIBUTIONS}")


def exp1_weight_range() -> tuple[float, float]:
    """(min, max) / max |w| of the first layer of the Experiment 1 network (784-500-10, trained on digits28)."""
    from .exp1 import exp1_network

    w = next(exp1_network().parameters()).detach().double()
    scale = float(w.abs().max())
    return float(w.min()) / scale, float(w.max()) / scale


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, axes, path: Path) -> dict:
    """Grid, tight layout, write the PNG, free the figure; returns the plotted series."""
    return save_figure(plt, fig, path)


# ----------------------------------------------------------------------------- subset-sum

def subset_sum_counts(coeffs: np.ndarray, epsilons: list[float]) -> dict[str, Any]:
    """Per m (prefix length) and eps: successes (sup error over [-1, 1] <= eps), range failures (the
    positive or the negative coefficients cannot reach within eps of +1 or -1: the sums cannot
    cover the interval whatever their spacing) and resolution failures (the rest), and the median."""
    sup = sup_error_prefixes(coeffs, -1.0, 1.0)  # (seeds, m)
    top = np.cumsum(np.clip(coeffs, 0, None), axis=1)  # the largest sum of each prefix
    bottom = np.cumsum(np.clip(coeffs, None, 0), axis=1)  # the smallest
    out: dict[str, Any] = {"median": np.median(sup, axis=0), "sup": sup, "by_eps": {}}
    for eps in epsilons:
        ok = sup <= eps
        out_of_range = (top < 1 - eps) | (bottom > -1 + eps)
        out["by_eps"][eps] = {"successes": ok.sum(axis=0), "range": (~ok & out_of_range).sum(axis=0),
                              "resolution": (~ok & ~out_of_range).sum(axis=0)}
    return out


def median_slope(sup: np.ndarray, ms: list[int], rng: np.random.Generator, resamples: int = 200) -> dict[str, Any]:
    """Slope of log2(median sup error) against m (least squares over ``ms``), with a 95% percentile
    bootstrap interval over the seeds (resampled with replacement)."""
    cols = [m - 1 for m in ms]
    slope = float(np.polyfit(ms, np.log2(np.median(sup[:, cols], axis=0)), 1)[0])
    boots = []
    for _ in range(resamples):
        rows = rng.integers(0, len(sup), len(sup))
        boots.append(np.polyfit(ms, np.log2(np.median(sup[rows][:, cols], axis=0)), 1)[0])
    return {"slope": slope, "ci95": np.percentile(boots, [2.5, 97.5]).tolist(), "m_range": [ms[0], ms[-1]],
            "resamples": resamples}


def claim_subset_sum(args: argparse.Namespace) -> dict[str, Any]:
    seeds, top_m = (QUICK_SEEDS, QUICK_M) if args.quick else (SUBSET_SEEDS, SUBSET_M)
    dists = ["uniform", "product"] if args.quick else list(DISTRIBUTIONS)
    exp1_range = exp1_weight_range() if "exp1" in dists else None
    ms = list(range(1, top_m + 1))
    rng = np.random.default_rng(args.seed)
    whp, counts, slopes, fits = [], {}, {}, {}
    for dist in dists:
        c = subset_sum_counts(draw(rng, dist, seeds, top_m, exp1_range), SUBSET_EPS)
        counts[dist] = c
        slopes[dist] = median_slope(c["sup"], [m for m in ms if m >= 4], np.random.default_rng(args.seed + 1))
        for eps in SUBSET_EPS:
            e = c["by_eps"][eps]
            per_m = {m: (int(e["successes"][m - 1]), seeds) for m in ms}
            for delta in DELTAS:
                d = deciding_m(per_m, delta)
                at = (d["m"] or top_m) - 1
                whp.append({"distribution": dist, "eps": eps, "delta": delta, "m": d["m"], "successes": d["successes"],
                            "trials": d["trials"], "ci_low": d["ci_low"], "ci_high": d["ci_high"],
                            "certified_below": d["below"], "range_failures": int(e["range"][at]),
                            "resolution_failures": int(e["resolution"][at])})
    for dist in dists:
        for delta in DELTAS:
            rows = [r for r in whp if r["distribution"] == dist and r["delta"] == delta and r["m"] is not None]
            fit: dict[str, Any] = {"points": [[r["eps"], r["m"]] for r in rows]}
            if len(rows) >= 3 and not args.quick:  # two points are not a fit; quick mode fits nothing
                x = np.array([math.log2(1 / r["eps"]) for r in rows])
                y = np.array([r["m"] for r in rows], dtype=float)
                low = np.array([(r["certified_below"] or 0) + 1 for r in rows], dtype=float)
                ls = least_squares({"log2_inv_eps": x}, y)
                fit.update(slope=ls["coef"]["log2_inv_eps"], intercept=ls["intercept"], r2=ls["r2"],
                           slope_ci95=None if ls["ci95"] is None else ls["ci95"]["log2_inv_eps"],
                           slope_bracket=list(bracket_slopes(x, low, y)))
            fits[f"{dist} delta={delta:g}"] = fit

    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for dist, style in zip(dists, ("-", "--", ":")):
        for eps in (0.1, 0.01):
            axes[0].plot(ms, (counts[dist]["by_eps"][eps]["successes"] / seeds).tolist(), style, marker="o", ms=3,
                         label=f"{dist}, eps={eps:g}")
        axes[1].semilogy(ms, counts[dist]["median"].tolist(), style, marker="o", ms=3, label=f"{dist}: median sup error")
    for delta in DELTAS:
        axes[0].axhline(1 - delta, color="grey", linewidth=0.7)
    axes[1].semilogy(ms, [1 / (2.0 ** m - 1) for m in ms], "k-", linewidth=0.8,
                     label="optimum over all sets 1/(2^m - 1)")
    axes[0].set_xlabel("m (coefficients)")
    axes[0].set_ylabel(f"fraction of {seeds} seeds with sup error <= eps")
    axes[0].legend(fontsize=7)
    axes[1].set_xlabel("m (coefficients)")
    axes[1].set_ylabel("sup error over [-1, 1]")
    axes[1].legend(fontsize=8)
    figure = _save(plt, fig, axes, args.out / "subset-sum.png")

    def m_text(r):
        if r["m"] is None:
            return f"not certified for m <= {top_m}"
        bracket = f"the first m in ({r['certified_below'] or 0}, {r['m']}]; " if r["certified_below"] != r["m"] - 1 else ""
        return (f"m = {r['m']} ({bracket}{r['successes']}/{r['trials']} seeds, 95% CI "
                f"[{r['ci_low']:.4f}, {r['ci_high']:.4f}])")

    parts = []
    for dist in dists:
        at = {(r["eps"], r["delta"]): r for r in whp if r["distribution"] == dist}
        parts.append(f"{dist}: at eps = 0.01, P >= 0.5 {m_text(at[(0.01, 0.5)])}; P >= 0.99 {m_text(at[(0.01, 0.01)])}; "
                     f"log2(median sup error) changes by {slopes[dist]['slope']:.3f} per coefficient "
                     f"(95% bootstrap CI [{slopes[dist]['ci95'][0]:.3f}, {slopes[dist]['ci95'][1]:.3f}])")
    verdict = "subset-sum" + (" (quick, indicative)" if args.quick else "") + ": " + "; ".join(parts)
    whp_rows = [[r["distribution"], f"{r['eps']:g}", f"{r['delta']:g}", r["m"] if r["m"] is not None else f"> {top_m}",
                 r["certified_below"] if r["certified_below"] is not None else "-", f"{r['successes']}/{r['trials']}",
                 f"[{r['ci_low']:.4f}, {r['ci_high']:.4f}]", r["range_failures"], r["resolution_failures"]] for r in whp]
    per_m = [[dist, m, f"{counts[dist]['median'][m - 1]:.3g}"]
             + [f"{counts[dist]['by_eps'][eps]['successes'][m - 1] / seeds:.4f}" for eps in SUBSET_EPS]
             for dist in dists for m in ms]
    fit_rows = [[k, len(f["points"]), f"{f['slope']:.2f}" if "slope" in f else "no fit (fewer than 3 points)",
                 f"[{f['slope_ci95'][0]:.2f}, {f['slope_ci95'][1]:.2f}]" if f.get("slope_ci95") else "-",
                 f"[{f['slope_bracket'][0]:.2f}, {f['slope_bracket'][1]:.2f}]" if "slope_bracket" in f else "-",
                 f"{f['intercept']:.2f}" if "intercept" in f else "-", f"{f['r2']:.3f}" if "r2" in f else "-"]
                for k, f in fits.items()]
    method = (f"Exact sup error over targets in [-1, 1] (all 2^m subset sums sorted; the worst target is an end or "
              f"the midpoint of the largest gap), for {seeds} seeds; m coefficients drawn once per seed and their "
              f"prefixes give every smaller m (each prefix is a valid draw). Distributions: uniform U[-1, 1]; product: "
              f"the construction's default coefficients 1.5 u b, u, b ~ U[0, 1], alternating signs (balanced layout)"
              + (f"; exp1: uniform over the Experiment 1 network's first-layer weight range "
                 f"[{exp1_range[0]:.3f}, {exp1_range[1]:.3f}] (units of its largest |w|)" if exp1_range else "")
              + ". 'm' is the smallest m whose Clopper-Pearson 95% interval of P(sup error <= eps) lies at or above "
              "1 - delta; 'below' the largest m whose interval lies under it (the first m with P >= 1 - delta is in "
              "(below, m]). Failures at the deciding m: 'range' = the positive or negative coefficients cannot reach "
              "within eps of +-1, 'resolution' = the sums reach but leave a gap wider than 2 eps. Fits of m against "
              "log2(1/eps) need 3 or more certified points: slope with its t interval (residuals) and the slope range "
              "when each m is anywhere in its (below, m] bracket.")
    md = _doc("Claim 1: random subset sum", args, verdict, method,
              "### With high probability\n\n" + markdown_table(
                  ["distribution", "eps", "delta", "m", "below", "successes", "95% CI", "range failures",
                   "resolution failures"], whp_rows)
              + "\n### Fits of m against log2(1/eps)\n\n" + markdown_table(
                  ["distribution, delta", "points", "slope", "slope 95% CI", "slope over brackets", "intercept", "R^2"],
                  fit_rows)
              + "\n### Per m\n\n" + markdown_table(["distribution", "m", "median sup error"]
                                                   + [f"P(<= {e:g})" for e in SUBSET_EPS], per_m), "subset-sum.png")
    return {"verdict": verdict, "whp": whp, "fits": fits, "median_slope": slopes, "m": ms, "seeds": seeds,
            "exp1_range": exp1_range, "epsilons": SUBSET_EPS, "deltas": DELTAS,
            "per_m": {d: {"median": counts[d]["median"].tolist(),
                          "success_rate": {f"{e:g}": (counts[d]["by_eps"][e]["successes"] / seeds).tolist()
                                           for e in SUBSET_EPS}} for d in dists},
            "figure": figure, "markdown": md}


# ----------------------------------------------------------------------------- lower bound

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

    plt = _plt()
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
    figure = _save(plt, fig, axes, args.out / "lower-bound.png")

    built = [l for l in layers if l["n"]]
    verdict = (("lower-bound (quick, indicative): " if args.quick else "lower-bound: ")
               + f"for m = {ms[0]}..{ms[-1]} the signed geometric set attains 1/(2^m - 1) "
               f"{'at every m (to 1e-15 absolute, float64 rounding)' if attained else 'NOT at every m'}; no set tried ({len(ms) * 2 * seeds} random "
               f"sets and searched ones) beat it ({'none' if not beaten else f'BEATEN at m = {beaten}'}); one random "
               f"d x d pair covering {targets} targets of the operator-norm ball within eps needs total parameters "
               + (f"{min(l['total_ratio'] for l in built):.3g}-{max(l['total_ratio'] for l in built):.3g} x "
                  f"d^2 log2(1/eps) for d in {ds}, eps in {epsilons}" if built else "beyond n = 24 in every cell"))
    md = _doc("Claim 2: the lower bound, tight", args, verdict,
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


# ----------------------------------------------------------------------------- width

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
                    bound = certified(c)["bound"]
                    cell["n"].append(n)
                    cell["looseness"].append(bound / max(observed, 1e-300))
                    points.append({"d": d, "l": depth, "eps": eps, "target": t, "n": n, "observed": observed,
                                   "certified_bound": bound, "reach": reach[t]})
                cells.append(cell)
    fit: dict[str, Any] = {"coef_log2_d": None, "coef_log2_l": None, "coef_log2_inv_eps": None, "intercept": None,
                           "r2": None, "seeds_per_cell": q["targets"], "points": len(points)}  # None: no fit
    if len(points) >= 5 and not args.quick:  # quick mode fits nothing
        ls = least_squares({"log2_d": np.log2([p["d"] for p in points]), "log2_l": np.log2([p["l"] for p in points]),
                            "log2_inv_eps": np.log2([1 / p["eps"] for p in points])},
                           np.array([p["n"] for p in points], dtype=float))
        fit.update(coef_log2_d=ls["coef"]["log2_d"], coef_log2_l=ls["coef"]["log2_l"],
                   coef_log2_inv_eps=ls["coef"]["log2_inv_eps"], intercept=ls["intercept"], r2=ls["r2"], ci95=ls["ci95"])

    plt = _plt()
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
    figure = _save(plt, fig, axes, args.out / "width.png")

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
    md = _doc("Claim 3: logarithmic width, in the theorem's units", args, verdict,
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


# ----------------------------------------------------------------------------- coverage

#: coverage: Experiment 1's eps, the n scanned, trials (at least / at most per n; at n = 21), networks built
COVERAGE_EPS = 0.01
COVERAGE_N = [8, 10, 12, 14, 16, 18, 20, 21]
COVERAGE_MIN_TRIALS, COVERAGE_MAX_TRIALS, COVERAGE_TRIALS_21 = 3000, 200_000, 4_000_000
COVERAGE_NETWORKS = 3
QUICK_COVERAGE = dict(ns=[6, 8, 10, 12, 21], max_trials=20_000, trials_21=20_000, networks=0)
#: failures after which a rate is known well enough (more trials only where failures are rarer)
ENOUGH_FAILURES = 30


def exp1_weight_pool() -> tuple[np.ndarray, np.ndarray]:
    """Every weight of the Experiment 1 network (784-500-10, digits28) in its layer's units (divided
    by the layer's largest |w|, as the construction scales B), and eps in the same units."""
    from .exp1 import exp1_network

    weights, eps = [], []
    for p in exp1_network().parameters():
        w = p.detach().double().flatten().numpy()
        scale = float(np.abs(w).max())
        weights.append(w / scale)
        eps.append(np.full(len(w), COVERAGE_EPS / scale))
    return np.concatenate(weights), np.concatenate(eps)


def failure_count(n: int, rng: np.random.Generator, pool: tuple[np.ndarray, np.ndarray], min_trials: int,
                  max_trials: int) -> tuple[int, int]:
    """(failures, trials): a weight drawn uniformly from the pool, n fresh construction coefficients
    (product, balanced), the exact min-error subset (mitm) further than eps; trials double from
    ``min_trials`` until ENOUGH_FAILURES failures or ``max_trials``."""
    import solver

    failures = trials = 0
    chunk = min_trials
    while trials < max_trials:
        count = min(chunk, max_trials - trials)
        idx = rng.integers(0, len(pool[0]), count)
        res = solver.solve(pool[0][idx], draw(rng, "product", count, n), "min-error", backend="mitm", workers=None,
                           progress=False)
        failures += int((res.errors > pool[1][idx]).sum())
        trials += count
        if failures >= ENOUGH_FAILURES and trials >= min_trials:
            break
        chunk = min(2 * chunk, 200_000)
    return failures, trials


def exp1_networks(count: int, seed: int) -> list[dict[str, Any]]:
    """The Experiment 1 network constructed at n = 21 (min-error, default layout) with ``count``
    random networks (seeds): the weights each leaves further than eps."""
    from models.construct import ConstructOptions, construct
    from models.report import eps_coverage

    from .exp1 import exp1_network

    target = exp1_network()
    out = []
    for k in range(count):
        options = ConstructOptions.from_kwargs(n=21, seed=seed + k, eps=COVERAGE_EPS, backend="mitm", progress=False)
        cov = eps_coverage(construct(target, (1, 28, 28), (0.0, 1.0), options))
        out.append({"seed": seed + k, "weights": cov["weights_within_eps"] + cov["weights_missing_eps"],
                    "uncovered": cov["weights_missing_eps"]})
    return out


def claim_coverage(args: argparse.Namespace) -> dict[str, Any]:
    q = QUICK_COVERAGE if args.quick else dict(ns=COVERAGE_N, max_trials=COVERAGE_MAX_TRIALS,
                                               trials_21=COVERAGE_TRIALS_21, networks=COVERAGE_NETWORKS)
    pool = exp1_weight_pool()
    N = len(pool[0])
    rng = np.random.default_rng(args.seed)
    failure = []
    for n in q["ns"]:
        k, t = failure_count(n, rng, pool, COVERAGE_MIN_TRIALS, q["trials_21"] if n == 21 else q["max_trials"])
        low, high = clopper_pearson(k, t)
        failure.append({"n": n, "eps": COVERAGE_EPS, "failures": k, "trials": t, "rate": k / t, "ci_low": low,
                        "ci_high": high})
    at21 = next(r for r in failure if r["n"] == 21)
    expected = [N * at21["ci_low"], N * at21["rate"], N * at21["ci_high"]]
    all_covered = {"weights": N, "n": 21, "expected_uncovered": expected,
                   "union_bound_low": 1.0 - expected[2],  # P(all covered) >= 1 - E[uncovered] (no independence)
                   "independent_approx": [math.exp(-expected[2]), math.exp(-expected[1]), math.exp(-expected[0])]}
    networks = exp1_networks(q["networks"], args.seed)

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    rows_n = [r["n"] for r in failure]
    ax.semilogy(rows_n, [max(r["rate"], 1e-12) for r in failure], "o-", label="failure rate per weight")
    ax.semilogy(rows_n, [r["ci_high"] for r in failure], "v", label="95% CI upper end")
    ax.axhline(1.0 / N, color="k", linewidth=0.8)
    ax.text(rows_n[0], 1.3 / N, f"1 / {N:,} weights", fontsize=8)
    ax.set_xlabel("n (coefficients per weight)")
    ax.set_ylabel(f"P(min error > eps = {COVERAGE_EPS:g})")
    ax.legend(fontsize=8)
    figure = _save(plt, fig, [ax], args.out / "coverage.png")

    bound_text = (f"P(all covered) >= {all_covered['union_bound_low']:.3f} (union bound)"
                  if all_covered["union_bound_low"] > 0 else "the union bound is vacuous")
    built = (f"; built with {len(networks)} random networks: {sum(x['uncovered'] == 0 for x in networks)} cover every "
             f"weight (uncovered per network {[x['uncovered'] for x in networks]})" if networks else "")
    verdict = (("coverage (quick, indicative): " if args.quick else "coverage: ")
               + f"per weight of Experiment 1 (eps = {COVERAGE_EPS:g}) at n = 21 the construction fails with rate "
               f"{at21['rate']:.3g} ({at21['failures']}/{at21['trials']}, 95% CI [{at21['ci_low']:.3g}, "
               f"{at21['ci_high']:.3g}]): expected uncovered among {N:,} weights {expected[1]:.3g} (95% CI "
               f"[{expected[0]:.3g}, {expected[2]:.3g}]); {bound_text}; if weights failed independently P(all covered) "
               f"would be {all_covered['independent_approx'][1]:.3g} (range [{all_covered['independent_approx'][0]:.3g}, "
               f"{all_covered['independent_approx'][2]:.3g}])" + built)
    md = _doc("Claim 4: how often the construction fails, and n = 21 on Experiment 1", args, verdict,
              f"Per trial: a weight drawn uniformly from the {N:,} weights of the Experiment 1 network (784-500-10 "
              f"trained on digits28), in its layer's units (divided by the layer's largest |w|, as the construction "
              f"scales B), n fresh construction coefficients (1.5 u b, balanced signs), the exact min-error subset "
              f"(mitm); a failure when it is further than eps = {COVERAGE_EPS:g} (in the weight's own units). Trials "
              f"from {COVERAGE_MIN_TRIALS} up, doubling until {ENOUGH_FAILURES} failures or the cap. Clopper-Pearson 95% "
              f"intervals. P(all {N:,} covered) >= 1 - N p (union bound: no independence assumed); exp(-N p) only if "
              f"weights failed independently (they share their input's fan-out coefficients, so they do not).",
              markdown_table(["n", "failures", "trials", "rate", "95% CI"],
                             [[r["n"], r["failures"], r["trials"], f"{r['rate']:.3g}",
                               f"[{r['ci_low']:.3g}, {r['ci_high']:.3g}]"] for r in failure])
              + ("\n### The Experiment 1 network built at n = 21\n\n" + markdown_table(
                  ["seed", "weights", "uncovered"], [[x["seed"], x["weights"], x["uncovered"]] for x in networks])
                 if networks else ""), "coverage.png")
    return {"verdict": verdict, "failure": failure, "all_covered": all_covered, "networks": networks,
            "figure": figure, "markdown": md}


# ----------------------------------------------------------------------------- shared

def _doc(title: str, args: argparse.Namespace, verdict: str, method: str, table: str, png: str) -> str:
    info = machine_info()
    return (f"# {title}\n\nCommand: `{command_line()}`  \nMachine: {info['cpu']}, {info['cores']} cores; seed {args.seed}"
            f"{'; quick mode' if args.quick else ''}\n\n**Verdict (measured):** {verdict}\n\n{method}\n\n{table}\n![{title}]({png})\n")


CLAIMS = {"subset-sum": claim_subset_sum, "lower-bound": claim_lower_bound, "width": claim_width,
          "coverage": claim_coverage}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", choices=list(CLAIMS) + ["all"], help="which claim to test")
    p.add_argument("--quick", action="store_true", help="small ranges (seconds); the full mode takes minutes")
    p.add_argument("--seed", type=int, default=0, help="seed of the random coefficient sets and targets (default 0)")
    p.add_argument("--out", type=Path, default=Path("bench_out/claims"),
                   help="directory for NAME.json, NAME.md and NAME.png (default bench_out/claims)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    args.out.mkdir(parents=True, exist_ok=True)
    names = list(CLAIMS) if args.name == "all" else [args.name]
    results = {}
    for name in names:
        start = time.perf_counter()
        res = CLAIMS[name](args)
        res["seconds"] = time.perf_counter() - start
        md = res.pop("markdown") + f"\nTime: {res['seconds']:.1f} s\n"
        write_outputs(args.out, name, {"claim": name, "command": command_line(), "seed": args.seed, "quick": args.quick, **res}, md)
        print(res["verdict"])
        print(f"  ({res['seconds']:.1f} s; wrote {args.out / (name + '.md')}, .json, .png)", file=sys.stderr)
        results[name] = res
    return results


def main(argv: list[str] | None = None) -> None:
    cli_main("lottery claims", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    main()
