"""Every backend against hand-worked problems and against the brute-force optimum."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import solver
from solver import Status

from .conftest import BACKEND_CONFIGS, requires_gurobi
from .problems import KNOWN, random_instances


@pytest.mark.parametrize("presolve", [False, True], ids=["backend", "presolve"])
@pytest.mark.parametrize("problem", KNOWN, ids=lambda p: p.name)
def test_known_problem(problem, backend_config, presolve):
    res = solver.solve(
        [problem.target], [problem.coefficients], problem.objective, eps=problem.eps,
        max_size=problem.max_size, presolve=presolve, **backend_config, **problem.options,
    )
    assert res.errors[0] == pytest.approx(problem.error, abs=1e-6)
    assert Status(res.status[0]) == problem.status
    assert res.fallback[0] == (problem.status == Status.INFEASIBLE)
    if problem.size is not None:
        assert res.sizes[0] == problem.size
    if problem.mask is not None:
        assert res.masks[0].tolist() == problem.mask
    if problem.max_size is not None:
        assert res.sizes[0] <= problem.max_size


def _check_against_reference(res, ref, objective, eps, tight=None):
    """Errors (min-error) or sizes then errors (min-size) match the reference within tolerance.

    For backends with a rounding tolerance (cpsat, gurobi) a min-size answer must fit eps, be no
    smaller than the exact optimum, and be no larger than the optimum at eps - tolerance
    (``tight``: the brute-force answer at that tighter eps).
    """
    assert np.all(res.status != Status.FEASIBLE)  # no time limit: every answer is proved
    tol = res.tolerance + ref.tolerance + 1e-12
    if objective == "min-error":
        assert np.all(np.abs(res.errors - ref.errors) <= tol)
        return
    fits = ref.status == Status.OPTIMAL
    res_fits = res.status == Status.OPTIMAL
    assert np.all(res.errors[res_fits] <= eps + 1e-12)
    assert np.all(res_fits <= fits)  # never claims a fit where none exists
    assert np.all(res.sizes[res_fits] >= ref.sizes[res_fits])  # never beats the exact optimum
    exact = res.tolerance < 1e-9  # float-exact backends: same status, size and error
    assert np.array_equal(res.status[exact], ref.status[exact])
    assert np.array_equal(res.sizes[exact & fits], ref.sizes[exact & fits])
    assert np.all(np.abs(res.errors[exact] - ref.errors[exact]) <= tol[exact])
    if tight is not None:
        tight_fits = tight.status == Status.OPTIMAL
        assert np.all(res_fits[tight_fits])
        assert np.all(res.sizes[tight_fits] <= tight.sizes[tight_fits])
    if (~exact).any() and tight is None:
        raise AssertionError("pass `tight` for backends with a tolerance")


def _tight(t, c, objective, eps, res, **kwargs):
    """The brute-force answer at eps - the result's largest tolerance (min-size only)."""
    if objective != "min-size" or res.tolerance.max() < 1e-9:
        return None
    return solver.solve(t, c, objective, eps=max(eps - res.tolerance.max(), 0.0), backend="brute",
                        presolve=False, **kwargs)


def test_thousands_of_random_instances_mitm_matches_brute():
    rng = np.random.default_rng(1234)
    t, c, _ = random_instances(rng, 3000, 1, 16)
    for objective, eps in (("min-error", None), ("min-size", 0.01), ("min-size", 0.001)):
        ref = solver.solve(t, c, objective, eps=eps, backend="brute")
        res = solver.solve(t, c, objective, eps=eps, backend="mitm", presolve=False)
        _check_against_reference(res, ref, objective, eps)
        presolved = solver.solve(t, c, objective, eps=eps, backend="mitm")
        _check_against_reference(presolved, ref, objective, eps)


def test_m20_instances_all_installed_backends_match_brute(backend_config):
    rng = np.random.default_rng(20)
    count = 6 if backend_config["backend"] in ("gurobi", "brute") else 40
    t, c, _ = random_instances(rng, count, 20, 20)
    for objective, eps in (("min-error", None), ("min-size", 0.01)):
        if backend_config["backend"] == "gurobi" and objective == "min-error":
            continue  # exact min-error at m = 20 takes Gurobi ~1 s a problem; covered at m <= 12
        ref = solver.solve(t, c, objective, eps=eps, backend="brute")
        res = solver.solve(t, c, objective, eps=eps, presolve=False, **backend_config)
        _check_against_reference(res, ref, objective, eps, _tight(t, c, objective, eps, res))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    m=st.integers(0, 12),
    objective=st.sampled_from(["min-error", "min-size"]),
    eps=st.sampled_from([0.3, 0.05, 0.01, 1e-3]),
    max_size=st.one_of(st.none(), st.integers(0, 6)),
    scale=st.sampled_from([1.0, 1e-3, 50.0]),
    config=st.sampled_from(["mitm", "mitm-torch", "cpsat"]),
)
def test_property_backend_equals_brute(seed, m, objective, eps, max_size, scale, config):
    rng = np.random.default_rng(seed)
    t, c, _ = random_instances(rng, 8, m, m)
    t, c = t * scale, c * scale
    eps = eps * scale
    kwargs = dict(objective=objective, eps=eps, max_size=max_size)
    ref = solver.solve(t, c, backend="brute", **kwargs)
    res = solver.solve(t, c, presolve=False, **kwargs, **BACKEND_CONFIGS[config])
    _check_against_reference(res, ref, objective, eps, _tight(t, c, objective, eps, res, max_size=max_size))
    if max_size is not None:
        assert np.all(res.sizes <= max_size)


@requires_gurobi
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), m=st.integers(1, 10),
       objective=st.sampled_from(["min-error", "min-size"]))
def test_property_gurobi_equals_brute(seed, m, objective):
    rng = np.random.default_rng(seed)
    t, c, _ = random_instances(rng, 4, m, m)
    ref = solver.solve(t, c, objective, eps=0.01, backend="brute")
    res = solver.solve(t, c, objective, eps=0.01, backend="gurobi", presolve=False)
    _check_against_reference(res, ref, objective, 0.01, _tight(t, c, objective, 0.01, res))


def test_errors_are_recomputed_from_masks():
    rng = np.random.default_rng(5)
    t, c, lengths = random_instances(rng, 50, 3, 10)
    res = solver.solve(t, c, backend="mitm")
    c0 = np.nan_to_num(c)
    expected = np.abs(t - (c0 * res.masks).sum(axis=1))
    assert np.array_equal(res.errors, expected)
    assert not np.any(res.masks & np.isnan(c))  # padding is never kept
    assert np.array_equal(res.sizes, res.masks.sum(axis=1))


def test_lengths_array_ignores_entries_beyond():
    rng = np.random.default_rng(6)
    c = rng.uniform(-1, 1, (30, 8))
    lengths = rng.integers(0, 9, 30)
    junk = c.copy()
    junk[np.arange(8)[None, :] >= lengths[:, None]] = np.inf  # ignored
    t = rng.normal(0, 0.5, 30)
    a = solver.solve(t, junk, lengths=lengths, backend="mitm")
    padded = np.where(np.arange(8)[None, :] < lengths[:, None], c, np.nan)
    b = solver.solve(t, padded, backend="brute")
    assert np.allclose(a.errors, b.errors, atol=1e-12)


def _cpsat_stopped_by_time_limit(monkeypatch, native: str):
    """CP-SAT as a time limit leaves it: ``native`` status, the best subset found so far (the first
    coefficient) and a weak objective bound. No timing involved, so the test is deterministic."""
    from solver.backends import cpsat

    def stopped(self, T, C, z_max, size_weight):
        mask = np.zeros(self.n, dtype=bool)
        if native == "UNKNOWN":  # nothing found
            return native, mask, float("nan"), 0.0
        mask[0] = True
        return native, mask, float(abs(T - C[0]) + size_weight), 0.0

    monkeypatch.setattr(cpsat._Template, "solve", stopped)
    # the band enumeration stopped by the same time limit before finding anything
    monkeypatch.setattr(cpsat.CpsatBackend, "_settle", lambda self, *args: ([], False))


def test_time_limited_cpsat_reports_feasible_with_a_proven_bound(monkeypatch):
    _cpsat_stopped_by_time_limit(monkeypatch, "FEASIBLE")
    rng = np.random.default_rng(7)
    t, c = rng.uniform(-1, 1, 3), rng.uniform(-1, 1, (3, 12))
    res = solver.solve(t, c, "min-error", backend="cpsat", time_limit=1.0)
    assert np.all(res.status == Status.FEASIBLE) and not res.fallback.any()
    assert np.all(res.error_bound <= res.errors + res.tolerance) and np.all(np.isnan(res.size_bound))
    assert res.status_counts()["feasible"] == 3 and "3 hit the time limit" in res.summary()


def test_time_limited_min_size_without_a_fit_is_a_flagged_fallback_not_infeasible(monkeypatch):
    _cpsat_stopped_by_time_limit(monkeypatch, "UNKNOWN")
    res = solver.solve([0.3], [[0.1, 0.2, 0.25]], "min-size", eps=0.01, backend="cpsat", time_limit=1.0,
                       presolve=False)
    assert Status(res.status[0]) == Status.FEASIBLE  # nothing proved
    assert res.fallback[0]  # and the answer is not within eps
    assert "1 not within eps" in res.summary()


def test_an_unknown_native_status_is_an_error_naming_it(monkeypatch):
    _cpsat_stopped_by_time_limit(monkeypatch, "MODEL_SAT_WEIRD")
    with pytest.raises(solver.SolverError, match=r"backend 'cpsat' ended with native status 'MODEL_SAT_WEIRD'"):
        solver.solve([0.3], [[0.1, 0.2]], backend="cpsat")


@requires_gurobi
def test_gurobi_status_map_matches_gurobipy():
    from gurobipy import GRB

    from solver.backends.gurobi import GurobiBackend

    expected = {GRB.OPTIMAL: Status.OPTIMAL, GRB.INFEASIBLE: Status.INFEASIBLE, GRB.INF_OR_UNBD: Status.INFEASIBLE,
                GRB.TIME_LIMIT: Status.FEASIBLE}
    assert GurobiBackend.STATUS_MAP == expected


def test_bounds_have_one_unit_each():
    c = [[0.3, 0.2, 0.1, 0.45]] * 2
    res = solver.solve([0.6, 5.0], c, "min-size", eps=0.01, backend="brute", presolve=False)
    assert res.size_bound[0] == res.sizes[0] == 3 and np.isnan(res.error_bound[0])  # a size
    assert res.fallback[1] and res.error_bound[1] == pytest.approx(res.errors[1]) and np.isnan(res.size_bound[1])
    res = solver.solve([0.6], [c[0]], backend="mitm")
    assert res.error_bound[0] == pytest.approx(res.errors[0], abs=1e-12) and np.isnan(res.size_bound[0])


def test_result_summary_and_counts():
    res = solver.solve([5.0, 0.5], [[1.0, 1.0], [0.25, 0.25]], "min-size", eps=0.1, backend="mitm")
    assert res.status_counts() == {"optimal": 1, "feasible": 0, "infeasible": 1}
    assert "1 optimal" in res.summary() and "1 infeasible" in res.summary()
    assert "mitm" in repr(res)
    assert not res.success


def test_auto_dispatches_by_objective_and_m():
    """auto solves exactly as the backend it names: mitm up to its crossover m, cpsat beyond."""
    rng = np.random.default_rng(3)
    for m, expected in ((12, "mitm"), (solver.AUTO_MITM_MAX_M["min-size"] + 1, "cpsat")):
        t, c = rng.normal(0, 0.3, 4), rng.uniform(-1, 1, (4, m)) * rng.uniform(-1, 1, (4, m))
        res = solver.solve(t, c, "min-size", eps=0.01, presolve=False)
        assert res.backend == expected and res.info["requested_backend"] == "auto"
        same = solver.solve(t, c, "min-size", eps=0.01, backend=expected, presolve=False)
        assert np.array_equal(res.masks, same.masks)


def test_presolve_settles_subsets_of_at_most_two():
    c = [[0.3, 0.2, 0.1, 0.45]] * 4
    res = solver.solve([0.001, 0.445, 0.5, 0.6], c, "min-size", eps=0.01, backend="cpsat")
    assert res.presolved.tolist() == [True, True, True, False]
    assert res.sizes.tolist() == [0, 1, 2, 3]
    assert res.masks[2].tolist() == [True, True, False, False]  # 0.3 + 0.2: the only fitting pair
    assert np.all(res.tolerance[:3] == 0.0)
    capped = solver.solve([0.5], [[0.3, 0.2]], "min-size", eps=0.01, backend="mitm", max_size=1)
    assert not capped.presolved[0] and capped.status[0] == Status.INFEASIBLE


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), m=st.integers(0, 10), eps=st.sampled_from([0.3, 0.05, 0.01]),
       max_size=st.one_of(st.none(), st.integers(0, 3)))
def test_property_presolve_equals_brute(seed, m, eps, max_size):
    rng = np.random.default_rng(seed)
    t, c, _ = random_instances(rng, 16, m, m)
    ref = solver.solve(t, c, "min-size", eps=eps, max_size=max_size, backend="brute", presolve=False)
    res = solver.solve(t, c, "min-size", eps=eps, max_size=max_size, backend="brute")
    assert np.array_equal(res.sizes, ref.sizes)
    assert np.array_equal(res.status, ref.status)
    assert np.allclose(res.errors, ref.errors, atol=1e-15)


@pytest.mark.parametrize("objective, eps, resolution", [
    ("min-error", None, None), ("min-size", 0.01, None), ("min-size", 0.001, None),
    ("min-error", None, 1e-3), ("min-size", 0.01, 5e-4),  # coarse grids: the float64 settling decides
])
def test_cpsat_is_exact_in_float64(objective, eps, resolution):
    """The grid answer's band is enumerated and settled in float64: same status, size and error as
    brute force on every problem (not merely within a tolerance)."""
    rng = np.random.default_rng(4)
    t, c, _ = random_instances(rng, 150, 1, 14)
    ref = solver.solve(t, c, objective, eps=eps, backend="brute", presolve=False)
    res = solver.solve(t, c, objective, eps=eps, backend="cpsat", presolve=False, resolution=resolution)
    assert np.array_equal(res.status, ref.status) and np.array_equal(res.sizes, ref.sizes)
    assert np.all(np.abs(res.errors - ref.errors) <= 1e-12 * np.maximum(ref.errors, 1e-300))
    assert np.all(res.tolerance < 1e-12)  # float64 rounding only


@requires_gurobi
@pytest.mark.parametrize("objective, eps", [("min-error", None), ("min-size", 0.01), ("min-size", 0.001)])
def test_gurobi_is_exact_in_float64(objective, eps):
    rng = np.random.default_rng(5)
    t, c, _ = random_instances(rng, 60, 1, 12)
    ref = solver.solve(t, c, objective, eps=eps, backend="brute", presolve=False)
    res = solver.solve(t, c, objective, eps=eps, backend="gurobi", presolve=False)
    assert np.array_equal(res.status, ref.status) and np.array_equal(res.sizes, ref.sizes)
    assert np.all(np.abs(res.errors - ref.errors) <= 1e-12 * np.maximum(ref.errors, 1e-300))
