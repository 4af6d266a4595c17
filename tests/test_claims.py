"""`lottery claims`: exact sup errors and the invariants every claim must satisfy (quick mode)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.cli import main
from solver import ProblemTooLargeError, SolverInputError
from solver.theory import sup_error, sup_error_grid


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


def test_claims_quick_invariants(tmp_path, capsys):
    out = tmp_path / "claims"
    assert main(["claims", "all", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in ("subset-sum", "lower-bound", "width"):
        assert (out / f"{name}.png").stat().st_size > 1000
        assert "**Verdict (measured):**" in (out / f"{name}.md").read_text()
        assert f"{name}:" in printed
    lb = json.loads((out / "lower-bound.json").read_text())
    assert lb["violations"] == [] and lb["min_ratio"] >= 1.0
    assert all(layer["total_ratio"] >= 1.0 for layer in lb["layers"] if layer["n"])
    ss = json.loads((out / "subset-sum.json").read_text())
    for dist, per_m in ss["sup_error"].items():
        medians = [np.median(per_m[str(m)]) for m in ss["m"]]
        assert medians[-1] < medians[0] / 100  # more coefficients, smaller sup error
        for m in ss["m"]:
            assert min(per_m[str(m)]) >= 2.0 ** -m
        assert ss["fits"][dist]["m_needed"]["0.1"] is not None
    width = json.loads((out / "width.json").read_text())
    for r in width["results"]:
        assert r["n_bound"] is not None
        assert r["n_observed"] is not None and r["n_observed"] <= r["n_bound"]
        for n, bound, observed in r["trace"]:
            assert observed <= bound
