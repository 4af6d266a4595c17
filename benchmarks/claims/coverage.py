"""Claim 4, coverage: the construction's per-weight failure probability against n."""

from __future__ import annotations

import argparse
import math
from typing import Any

import numpy as np

from ..common import markdown_table
from ..inference import clopper_pearson
from .shared import claim_doc, draw, pyplot, save_plot

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
    from ..exp1 import exp1_network

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

    from ..exp1 import exp1_network

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

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    rows_n = [r["n"] for r in failure]
    ax.semilogy(rows_n, [max(r["rate"], 1e-12) for r in failure], "o-", label="failure rate per weight")
    ax.semilogy(rows_n, [r["ci_high"] for r in failure], "v", label="95% CI upper end")
    ax.axhline(1.0 / N, color="k", linewidth=0.8)
    ax.text(rows_n[0], 1.3 / N, f"1 / {N:,} weights", fontsize=8)
    ax.set_xlabel("n (coefficients per weight)")
    ax.set_ylabel(f"P(min error > eps = {COVERAGE_EPS:g})")
    ax.legend(fontsize=8)
    figure = save_plot(plt, fig, [ax], args.out / "coverage.png")

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
    md = claim_doc("Claim 4: how often the construction fails, and n = 21 on Experiment 1", args, verdict,
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
