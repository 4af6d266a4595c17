"""`lottery claims <name>`: test the paper's claims with exact computations (see the README, "Testing the theory").

* ``subset-sum``: random subset sum. For m coefficients drawn U[-1,1] or as products of two
  U[-1,1], the exact sup error over targets in [-1, 1] (all 2^m sums sorted), the probability
  P(sup error <= eps) over seeds, the smallest m reaching probability 1/2 for each eps, and a fit
  m = C log2(1/eps) + c0 with bootstrap confidence intervals.
* ``lower-bound``: m coefficients give at most 2^m sums, so the sup error over [-1, 1] is at
  least 2^-m for any coefficients. Checked on random sets, powers of two and sets found by a
  numerical search; and for d x d layers, the construction's total and kept parameters against
  d^2 log2(1/eps).
* ``width``: random target MLPs of width d and depth l; the smallest n (units per input) whose
  constructed network reaches error <= eps (certified bound, and observed), against
  log2(d l / eps), with the fitted slope.

Every command writes NAME.json, NAME.md and NAME.png into --out and prints one verdict line
that states what was measured. ``--quick`` runs in seconds (used by the tests).
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
from .inference import bracket_slopes, deciding_m, least_squares

EPSILONS = [1e-1, 1e-2, 1e-3, 1e-4]
#: subset-sum: eps, delta (P(sup error <= eps) >= 1 - delta), seeds and the largest m (full / quick)
SUBSET_EPS = [0.1, 0.05, 0.02, 0.01]
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
    from models.target import load_target

    from .exp1 import target_for

    w = next(load_target(target_for(500), "mlp").parameters()).detach().double()
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
        for eps in (SUBSET_EPS[0], SUBSET_EPS[-1]):
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


#: the one random network's B scale for every target of the ball (|w| <= 1): the default margin 1.5
BALL_SCALE = 1.5


def ball_width(d: int, eps: float, seed: int, n_max: int, targets: int) -> dict[str, Any]:
    """Smallest n for which ONE random d x d pair (seeded, B scale fixed, not fitted to a target)
    approximates every target of :func:`ball_targets` within eps in operator norm (min-error,
    inputs >= 0); its total parameters against the counting bound d^2 log2(1/eps)."""
    import torch

    from models.construct import ConstructOptions, construct
    from models.problems import kept_sums
    from models.random_net import generate

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
            S = kept_sums(spec, generate(spec), sol.masks)[0][0].reshape(d, d).numpy()
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
    beaten = [t["m"] for t in tight if t["best_sup_error"] < t["bound"] * (1 - 1e-12)]
    attained = all(abs(t["geometric_sup_error"] - t["bound"]) <= 1e-12 * t["bound"] for t in tight)

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
               f"{'at every m (to 1e-12)' if attained else 'NOT at every m'}; no set tried ({len(ms) * 2 * seeds} random "
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

def random_mlp(d: int, depth: int, seed: int):
    """depth Linear layers d -> d (no biases), ReLU between, weights U[-1, 1] / sqrt(d)."""
    import torch

    from models.zoo import mlp

    torch.manual_seed(seed)
    net = mlp([d] * (depth + 1), biases=False)
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, torch.nn.Linear):
                mod.weight.uniform_(-1, 1).div_(math.sqrt(d))
    return net.eval()


def smallest_width(d: int, depth: int, eps: float, seed: int, n_max: int, samples: int) -> dict[str, Any]:
    """Scan n upward; the first n whose certified bound (resp. observed error) is <= eps."""
    from models.construct import ConstructOptions, construct
    from models.verify import verify

    target = random_mlp(d, depth, seed)
    found: dict[str, int | None] = {"bound": None, "observed": None}
    trace = []
    for n in range(1, n_max + 1):
        c = construct(target, (d,), (0.0, 1.0), ConstructOptions.from_kwargs(n=n, seed=seed, progress=False))
        check = verify(c, None, samples=samples)
        trace.append((n, check["certified_bound"], check["max_output_error"]))
        if found["observed"] is None and check["max_output_error"] <= eps:
            found["observed"] = n
        if check["certified_bound"] <= eps:
            found["bound"] = n
            break
    return {"d": d, "depth": depth, "eps": eps, "n_bound": found["bound"], "n_observed": found["observed"],
            "x": math.log2(d * depth / eps), "trace": trace}


def claim_width(args: argparse.Namespace) -> dict[str, Any]:
    ds = [4, 8] if args.quick else [8, 16, 32, 64]
    depths = [2] if args.quick else [2, 3, 4]
    epsilons = [1e-1] if args.quick else [1e-1, 1e-2]
    n_max = 20 if args.quick else 30
    results = [smallest_width(d, l, eps, args.seed, n_max, 64 if args.quick else 256)
               for d in ds for l in depths for eps in epsilons]
    fits = {}
    for key in ("n_bound", "n_observed"):
        pts = [(r["x"], r[key]) for r in results if r[key] is not None]
        if len(pts) >= 3 and len({p[0] for p in pts}) >= 3 and not args.quick:  # two points are not a fit
            ls = least_squares({"x": np.array([p[0] for p in pts])}, np.array([p[1] for p in pts], dtype=float))
            fits[key] = {"slope": ls["coef"]["x"], "intercept": ls["intercept"], "r2": ls["r2"]}
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for key, marker in (("n_bound", "o"), ("n_observed", "s")):
        pts = [(r["x"], r[key]) for r in results if r[key] is not None]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker,
                   label=f"{key.split('_')[1]}: error <= eps" + (f" (slope {fits[key]['slope']:.2f})" if key in fits else ""))
        if key in fits:
            xs = np.linspace(min(p[0] for p in pts), max(p[0] for p in pts), 10)
            ax.plot(xs, fits[key]["slope"] * xs + fits[key]["intercept"], "--")
    ax.set_xlabel("log2(d l / eps)")
    ax.set_ylabel("smallest n (units per input and sign)")
    ax.legend(fontsize=8)
    _save(plt, fig, [ax], args.out / "width.png")
    missing = [(r["d"], r["depth"], r["eps"]) for r in results if r["n_bound"] is None]
    verdict = ("width: smallest n against log2(d l / eps) over d in {ds}, l in {depths}, eps in {eps}: ".format(ds=ds, depths=depths, eps=epsilons)
               + "; ".join(f"{k.split('_')[1]} criterion slope {v['slope']:.2f}, intercept {v['intercept']:.2f}" for k, v in fits.items())
               + (f"; certified bound not reached within n <= {n_max} for {missing}" if missing else ""))
    rows = [[r["d"], r["depth"], r["eps"], f"{r['x']:.2f}", r["n_bound"], r["n_observed"]] for r in results]
    md = _doc("Claim 3: logarithmic width", args, verdict,
              "Random target MLPs (depth l Linear layers d -> d, weights U[-1,1]/sqrt(d), no biases, ReLU between), "
              "inputs in [0,1]^d; constructed with min-error for n = 1, 2, ...; 'bound' is the first n whose certified "
              "sup error over the input box is <= eps, 'observed' the first n whose largest error on uniform samples "
              "of the box is <= eps. Slopes are least-squares fits of n against log2(d l / eps).",
              markdown_table(["d", "l", "eps", "log2(d l / eps)", "n (bound)", "n (observed)"], rows), "width.png")
    return {"verdict": verdict, "fits": fits, "results": results, "markdown": md}


# ----------------------------------------------------------------------------- shared

def _doc(title: str, args: argparse.Namespace, verdict: str, method: str, table: str, png: str) -> str:
    info = machine_info()
    return (f"# {title}\n\nCommand: `{command_line()}`  \nMachine: {info['cpu']}, {info['cores']} cores; seed {args.seed}"
            f"{'; quick mode' if args.quick else ''}\n\n**Verdict (measured):** {verdict}\n\n{method}\n\n{table}\n![{title}]({png})\n")


CLAIMS = {"subset-sum": claim_subset_sum, "lower-bound": claim_lower_bound, "width": claim_width}


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
