"""`lottery claims`: exact sup errors and the invariants every claim must satisfy (quick mode)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.cli import main
from solver import ProblemTooLargeError, SolverInputError
from benchmarks.claims.lower_bound import geometric_set, local_search, tight_bound
from benchmarks.claims.shared import draw
from benchmarks.claims.subset_sum import subset_sum_counts
from benchmarks.inference import bracket_slopes, clopper_pearson, deciding_m, least_squares
from solver.theory import sup_error, sup_error_grid, sup_error_prefixes


@pytest.mark.parametrize("m", [0, 1, 2, 4, 7, 10])
def test_exact_sup_error_equals_a_fine_grid(m):
    rng = np.random.default_rng(m)
    c = rng.uniform(-1, 1, (6, m)) * rng.uniform(-1, 1, (6, m))
    exact = sup_error(c, -1.0, 1.0)
    points = 400_001
    grid = sup_error_grid(c, -1.0, 1.0, points)
    step = 2.0 / (points - 1)
    assert np.all(grid <= exact + 1e-12)  # the grid never exceeds the sup
    assert np.all(grid >= exact - step / 2 - 1e-12)  # and comes within half a step of it
    assert np.all(exact >= 2.0 ** -m - 1e-15)  # counting bound


def test_sup_error_on_other_intervals_and_inputs():
    c = np.array([[0.5, 0.25]])  # sums 0, .25, .5, .75
    assert sup_error(c, 0.0, 0.75)[0] == pytest.approx(0.125)
    assert sup_error(c, 1.0, 2.0)[0] == pytest.approx(1.25)  # interval beyond every sum
    with pytest.raises(SolverInputError, match="lo <= hi"):
        sup_error(c, 1.0, 0.0)
    with pytest.raises(ProblemTooLargeError, match="m <= 26"):
        sup_error(np.zeros((1, 27)))


def test_sup_error_of_every_prefix_in_one_pass():
    rng = np.random.default_rng(1)
    c = rng.uniform(-1, 1, (20, 11))
    prefixes = sup_error_prefixes(c)
    for j in range(11):
        assert np.array_equal(prefixes[:, j], sup_error(c[:, :j + 1]))
    assert np.all(np.diff(prefixes, axis=1) <= 0)  # more coefficients never raise the sup error


def test_clopper_pearson_and_the_deciding_m():
    lo, hi = clopper_pearson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 10))  # the closed form at k = 0
    lo, hi = clopper_pearson(10, 10)
    assert hi == 1.0 and lo == pytest.approx(0.025 ** (1 / 10))
    from scipy.stats import binomtest

    for k, n in ((1, 10 ** 6), (135, 10 ** 6), (5, 7), (2990, 3000)):  # scipy's own exact interval
        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
        assert clopper_pearson(k, n) == pytest.approx((ci.low, ci.high), rel=1e-8)
    lo, hi = clopper_pearson(2990, 3000)
    assert lo < 2990 / 3000 < hi and 0.99 < lo
    counts = {1: (100, 3000), 2: (2000, 3000), 3: (2975, 3000), 4: (2995, 3000), 5: (3000, 3000)}
    d = deciding_m(counts, delta=0.01)
    assert d["m"] == 4 and d["below"] == 2 and d["ci_low"] >= 0.99  # m = 3 is neither certified above nor below
    assert deciding_m(counts, delta=0.5)["m"] == 2
    none = deciding_m({1: (1, 10), 2: (5, 10)}, delta=0.1)
    assert none["m"] is None and none["last_m"] == 2


def test_least_squares_recovers_known_slopes():
    rng = np.random.default_rng(0)
    x1, x2, x3 = rng.uniform(0, 5, 200), rng.uniform(0, 5, 200), rng.uniform(0, 5, 200)
    y = 3.0 * x1 + 3.3 * x2 + 0.7 * x3 + 2.0 + rng.normal(0, 0.3, 200)
    fit = least_squares({"a": x1, "b": x2, "c": x3}, y)
    for name, true in (("a", 3.0), ("b", 3.3), ("c", 0.7), ("intercept", 2.0)):
        low, high = fit["ci95"][name]
        assert low <= true <= high and high - low < 0.4
    assert fit["r2"] > 0.98
    assert least_squares({"a": x1[:2]}, y[:2])["ci95"] is None  # no residual degrees of freedom: no interval


def test_slope_range_over_brackets_is_the_extreme_of_every_choice():
    rng = np.random.default_rng(2)
    x = np.array([1.0, 2.5, 3.0, 5.0, 6.5])
    low = rng.integers(5, 10, 5).astype(float)
    high = low + rng.integers(0, 3, 5)
    smin, smax = bracket_slopes(x, low, high)
    slopes = [np.polyfit(x, rng.uniform(low, high), 1)[0] for _ in range(2000)]
    corners = [np.polyfit(x, np.where(rng.random(5) < 0.5, low, high), 1)[0] for _ in range(200)]
    assert smin - 1e-12 <= min(slopes + corners) and max(slopes + corners) <= smax + 1e-12
    assert min(corners) == pytest.approx(smin) and max(corners) == pytest.approx(smax)


def test_the_optimum_is_attained_by_the_signed_geometric_set():
    assert sup_error(np.array([[-2 / 7, -4 / 7, 8 / 7]]))[0] == pytest.approx(1 / 7, abs=1e-15)
    for m in range(1, 15):
        assert sup_error(geometric_set(m))[0] == pytest.approx(tight_bound(m), rel=1e-12)
    rng = np.random.default_rng(3)  # and nothing does better (m = 1..6, random and searched sets)
    for m in range(1, 7):
        assert sup_error(rng.uniform(-1.5, 1.5, (5000, m))).min() >= tight_bound(m) * (1 - 1e-12)
        assert local_search(m, rng, 60, 2)[1] >= tight_bound(m) * (1 - 1e-12)


def test_a_certified_m_predicts_the_success_rate_on_fresh_seeds():
    """The m certified from one set of seeds (P >= 1 - delta at 95%) is not contradicted on 3000 fresh
    seeds: a one-sided binomial test of 'P < 1 - delta' does not reject (p > 0.001)."""
    from scipy.stats import binomtest

    eps, delta = 0.1, 0.1
    c = subset_sum_counts(draw(np.random.default_rng(10), "uniform", 3000, 14), [eps])
    m = deciding_m({j + 1: (int(k), 3000) for j, k in enumerate(c["by_eps"][eps]["successes"])}, delta)["m"]
    assert m is not None
    fresh = sup_error(draw(np.random.default_rng(11), "uniform", 3000, m))
    k = int((fresh <= eps).sum())
    assert binomtest(k, 3000, 1 - delta, alternative="less").pvalue > 1e-3
    too_few = sup_error(draw(np.random.default_rng(12), "uniform", 3000, m - 3))  # and fewer coefficients fall short
    assert binomtest(int((too_few <= eps).sum()), 3000, 1 - delta, alternative="less").pvalue < 1e-3


def test_claims_quick_invariants(tmp_path, capsys):
    out = tmp_path / "claims"
    assert main(["claims", "all", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in ("subset-sum", "lower-bound", "width", "coverage"):
        assert (out / f"{name}.png").stat().st_size > 1000
        assert "**Verdict (measured):**" in (out / f"{name}.md").read_text()
        assert f"{name} (quick, indicative)" in printed
    ss = json.loads((out / "subset-sum.json").read_text())
    rows = {(r["distribution"], r["eps"], r["delta"]): r for r in ss["whp"]}
    assert {("uniform", 0.1, 0.5), ("uniform", 0.05, 0.5)} <= set(rows)
    for r in ss["whp"]:
        assert set(r) >= {"distribution", "eps", "delta", "m", "successes", "trials", "ci_low", "ci_high"}
        assert r["ci_low"] <= r["successes"] / r["trials"] <= r["ci_high"]
        if r["m"] is not None:
            assert r["ci_low"] >= 1 - r["delta"]
            assert r["successes"] == round(ss["per_m"][r["distribution"]]["success_rate"][f"{r['eps']:g}"][r["m"] - 1]
                                           * r["trials"])
    assert all("slope" not in f for f in ss["fits"].values())  # quick mode fits nothing
    for dist, per_m in ss["per_m"].items():  # the plot shows the table
        for eps in (0.1, 0.01):
            assert ss["figure"][f"0: {dist}, eps={eps:g}"]["y"] == per_m["success_rate"][f"{eps:g}"]
        assert ss["figure"][f"1: {dist}: median sup error"]["y"] == per_m["median"]
    lb = json.loads((out / "lower-bound.json").read_text())
    assert lb["beaten"] == [] and lb["geometric_attains"]
    for t in lb["tight"]:
        assert set(t) >= {"m", "best_sup_error", "geometric_sup_error", "bound"}
        assert t["best_sup_error"] >= t["bound"] - 1e-15 and t["bound"] == tight_bound(t["m"])
    assert lb["figure"]["0: optimum 1/(2^m - 1)"]["y"] == [t["bound"] for t in lb["tight"]]
    assert lb["figure"]["0: best set tried"]["y"] == [t["best_sup_error"] for t in lb["tight"]]
    for layer in lb["layers"]:
        assert layer["n"] is not None and layer["worst_operator_error"] <= layer["eps"]
    width = json.loads((out / "width.json").read_text())
    assert set(width["fit"]) >= {"coef_log2_d", "coef_log2_l", "coef_log2_inv_eps", "intercept", "r2", "seeds_per_cell"}
    assert width["fit"]["r2"] is None  # quick mode fits nothing
    assert sum(c["trivial"] for c in width["cells"]) >= 1  # quick mode has targets within 0.7 of 0 ...
    for p in width["points"]:
        assert p["observed"] <= p["eps"] < p["reach"]  # ... which are excluded: every point is within eps, not trivial
        assert p["observed"] <= p["certified_bound"]  # the bound covers the box, which holds the ball
    xs = [np.log2(p["d"] * p["l"] / p["eps"]) for p in width["points"]]
    assert width["figure"]["0: smallest n per target"] == {"x": xs, "y": [p["n"] for p in width["points"]]}
    cov = json.loads((out / "coverage.json").read_text())
    rates = [r["rate"] for r in cov["failure"]]
    assert rates[0] > rates[-1] and all(r["ci_low"] <= r["rate"] <= r["ci_high"] for r in cov["failure"])
    assert cov["figure"]["0: failure rate per weight"]["y"] == [max(r, 1e-12) for r in rates]
    low, mid, high = cov["all_covered"]["expected_uncovered"]
    assert low <= mid <= high and cov["all_covered"]["weights"] == 397000
