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


def test_time_limited_cpsat_never_claims_optimal_without_proof():
    rng = np.random.default_rng(7)
    c = rng.uniform(-1, 1, (3, 60))
    t = rng.uniform(-3, 3, 3)
    res = solver.solve(t, c, "min-error", backend="cpsat", time_limit=0.02, resolution=1e-12)
    # an optimum of 60 coefficients at 1e-12 cannot be proved in 20 ms
    assert np.all(res.status == Status.FEASIBLE)
    assert np.all(res.bound <= res.errors + res.tolerance)
    assert res.status_counts()["feasible"] == 3


def test_result_summary_and_counts():
    res = solver.solve([5.0, 0.5], [[1.0, 1.0], [0.25, 0.25]], "min-size", eps=0.1, backend="mitm")
    assert res.status_counts() == {"optimal": 1, "feasible": 0, "infeasible": 1}
    assert "1 optimal" in res.summary() and "1 infeasible" in res.summary()
    assert "mitm" in repr(res)
    assert not res.success


def test_auto_picks_mitm_for_small_m_and_cpsat_beyond():
    res = solver.solve([0.3], [[0.1, 0.2]])
    assert res.backend == "mitm" and res.info["requested_backend"] == "auto"
    assert solver.backends.choose_backend("min-error", 40) == "mitm"
    assert solver.backends.choose_backend("min-error", 41) == "cpsat"
    assert solver.backends.choose_backend("min-size", 33) == "cpsat"


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
