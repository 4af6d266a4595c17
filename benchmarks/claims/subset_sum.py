"""Claim 1, random subset sum: the exact sup error of random coefficient sets, with high probability."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np

from solver.theory import sup_error_prefixes

from ..common import markdown_table
from ..inference import bracket_slopes, deciding_m, least_squares
from .shared import DISTRIBUTIONS, claim_doc, draw, exp1_weight_range, pyplot, save_plot

#: subset-sum: eps, delta (P(sup error <= eps) >= 1 - delta), seeds and the largest m (full / quick)
SUBSET_EPS = [0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001]
DELTAS = [0.5, 0.1, 0.01]
SUBSET_SEEDS, SUBSET_M = 3000, 22
QUICK_SEEDS, QUICK_M = 400, 14


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


def _figure(ms: list[int], dists: list[str], counts: dict, seeds: int, path: Path) -> dict:
    """Success rates and median sup errors against m; returns the plotted series."""
    plt = pyplot()
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
    return save_plot(plt, fig, axes, path)


def _fits(whp: list[dict], dists: list[str], quick: bool) -> dict[str, Any]:
    """Per distribution and delta, m against log2(1/eps) over the certified points (3 or more; none in
    quick mode): least squares with its t interval, and the slope range over the (below, m] brackets."""
    fits = {}
    for dist in dists:
        for delta in DELTAS:
            rows = [r for r in whp if r["distribution"] == dist and r["delta"] == delta and r["m"] is not None]
            fit: dict[str, Any] = {"points": [[r["eps"], r["m"]] for r in rows]}
            if len(rows) >= 3 and not quick:  # two points are not a fit; quick mode fits nothing
                x = np.array([math.log2(1 / r["eps"]) for r in rows])
                y = np.array([r["m"] for r in rows], dtype=float)
                low = np.array([(r["certified_below"] or 0) + 1 for r in rows], dtype=float)
                ls = least_squares({"log2_inv_eps": x}, y)
                fit.update(slope=ls["coef"]["log2_inv_eps"], intercept=ls["intercept"], r2=ls["r2"],
                           slope_ci95=None if ls["ci95"] is None else ls["ci95"]["log2_inv_eps"],
                           slope_bracket=list(bracket_slopes(x, low, y)))
            fits[f"{dist} delta={delta:g}"] = fit
    return fits


def claim_subset_sum(args: argparse.Namespace) -> dict[str, Any]:
    seeds, top_m = (QUICK_SEEDS, QUICK_M) if args.quick else (SUBSET_SEEDS, SUBSET_M)
    dists = ["uniform", "product"] if args.quick else list(DISTRIBUTIONS)
    exp1_range = exp1_weight_range() if "exp1" in dists else None
    ms = list(range(1, top_m + 1))
    rng = np.random.default_rng(args.seed)
    whp, counts, slopes = [], {}, {}
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
    fits = _fits(whp, dists, args.quick)

    figure = _figure(ms, dists, counts, seeds, args.out / "subset-sum.png")

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
    md = claim_doc("Claim 1: random subset sum", args, verdict, method,
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
