"""Bad input gets a clear error naming what was received and what is expected."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import solver
from solver import (
    BackendCapabilityError,
    BackendUnavailableError,
    ProblemTooLargeError,
    SolverInputError,
    SolverTypeError,
    UnknownBackendError,
)


def test_nan_target():
    with pytest.raises(SolverInputError, match=r"`targets` must be finite; got nan at index 1"):
        solver.solve([0.1, np.nan], [[0.1], [0.2]])


def test_inf_coefficient():
    with pytest.raises(SolverInputError, match=r"`coefficients` must be finite; got inf in problem 0 at position 1"):
        solver.solve([0.1], [[0.1, np.inf]])


def test_nan_inside_row_is_not_padding():
    with pytest.raises(SolverInputError, match=r"NaN only as trailing padding; problem 0 has NaN at position 0"):
        solver.solve([0.1], [[np.nan, 0.2]])


def test_shapes():
    with pytest.raises(SolverInputError, match=r"`targets` must have shape \(B,\)"):
        solver.solve([[0.1]], [[0.1]])
    with pytest.raises(SolverInputError, match=r"shape \(B, m\) with B = len\(targets\) = 2; got shape \(1, 2\)"):
        solver.solve([0.1, 0.2], [[0.1, 0.2]])
    with pytest.raises(SolverInputError, match=r"must be numeric arrays"):
        solver.solve(["a"], [[0.1]])


def test_lengths_out_of_range():
    with pytest.raises(SolverInputError, match=r"`lengths` must lie in \[0, 2\].*got values in \[0, 3\]"):
        solver.solve([0.1, 0.2], [[0.1, 0.2], [0.3, 0.4]], lengths=[0, 3])
    with pytest.raises(SolverInputError, match=r"`lengths` must be an integer array of shape \(2,\)"):
        solver.solve([0.1, 0.2], [[0.1, 0.2], [0.3, 0.4]], lengths=[0.5, 1.0])


def test_negative_eps():
    with pytest.raises(SolverInputError, match=r"`eps` must be a real number in the range \[0.0, inf\); got -0.1 instead"):
        solver.solve([0.1], [[0.1]], "min-size", eps=-0.1)


def test_min_size_needs_eps():
    with pytest.raises(SolverInputError, match=r"`eps` is required for objective 'min-size'"):
        solver.solve([0.1], [[0.1]], "min-size")


def test_unknown_objective_and_options():
    with pytest.raises(SolverInputError, match=r"`objective` must be one of \['min-error', 'min-size'\]; got 'fast'"):
        solver.solve([0.1], [[0.1]], "fast")
    with pytest.raises(SolverInputError, match=r"`workers` must be an int in the range \[1, inf\); got 0"):
        solver.solve([0.1], [[0.1]], workers=0)
    with pytest.raises(SolverTypeError, match=r"`max_size` must be an int in the range \[0, inf\); got 1.5 \(float\)"):
        solver.solve([0.1], [[0.1]], max_size=1.5)
    with pytest.raises(SolverTypeError, match=r"`time_limit` must be a real number .* got True \(bool\)"):
        solver.solve([0.1], [[0.1]], time_limit=True)
    with pytest.raises(SolverInputError, match=r"`time_limit` must be a real number in the range \(0.0, inf\); got nan"):
        solver.solve([0.1], [[0.1]], time_limit=float("nan"))
    with pytest.raises(SolverInputError, match=r"`executor` must be one of \['local', 'dask'\]; got 'spark'"):
        solver.solve([0.1], [[0.1]], executor="spark")
    with pytest.raises(SolverInputError, match=r"unknown option\(s\) \['workres'\]; the options of solver.solve are"):
        solver.solve([0.1], [[0.1]], workres=2)
    with pytest.raises(SolverInputError, match=r"`device` must be 'cpu' or 'cuda\[:index\]'; got 'tpu'"):
        solver.solve([0.1], [[0.1]], device="tpu")


def test_unknown_backend_lists_available():
    with pytest.raises(UnknownBackendError, match=r"unknown backend 'fastest'; expected one of \['mitm', 'cpsat', 'gurobi', 'brute', 'auto'\]"):
        solver.solve([0.1], [[0.1]], backend="fastest")


def test_mitm_memory_refusal_says_how_much_and_what_instead():
    c = np.zeros((1, 50))
    with pytest.raises(ProblemTooLargeError, match=r"would need [\d.]+ GiB .* for m=50 .*use backend='cpsat' or 'gurobi'"):
        solver.solve([0.1], c, backend="mitm")
    with pytest.raises(ProblemTooLargeError, match=r"at most 62 coefficients per problem; got m=63"):
        solver.solve([0.1], np.zeros((1, 63)), backend="mitm")


def test_brute_refuses_large_m():
    with pytest.raises(ProblemTooLargeError, match=r"limited to m <= 22; got m=23; use backend='mitm'"):
        solver.solve([0.1], np.zeros((1, 23)), backend="brute")


def test_time_limit_refused_by_exact_backends():
    with pytest.raises(BackendCapabilityError, match=r"'mitm' is exact and has no time limit"):
        solver.solve([0.1], [[0.1]], backend="mitm", time_limit=1.0)


def test_cuda_requested_without_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(BackendUnavailableError, match=r"device='cuda' but torch sees no CUDA device"):
        solver.solve([0.1], [[0.1]], backend="mitm", device="cuda")


def test_cpsat_resolution_checks():
    with pytest.raises(SolverInputError, match=r"eps=0 needs an explicit `resolution`"):
        solver.solve([0.1], [[0.1]], "min-size", eps=0.0, backend="cpsat")
    with pytest.raises(SolverInputError, match=r"resolution 0.1 is too coarse for eps=0.01"):
        solver.solve([0.5], [[0.1, 0.3]], "min-size", eps=0.01, backend="cpsat", resolution=0.1)
    with pytest.raises(SolverInputError, match=r"too fine .* pass a coarser `resolution`"):
        solver.solve([0.5], [[0.1, 0.3]], "min-error", backend="cpsat", resolution=1e-20)


def test_missing_optional_solver_names_the_extra(monkeypatch):
    real = importlib.util.find_spec

    def fake_find_spec(name, *args, **kwargs):
        return None if name == "gurobipy" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", fake_find_spec)
    with pytest.raises(BackendUnavailableError, match=r"'gurobi' requires gurobipy, which is not installed.*lottery-tickets\[gurobi\]"):
        solver.solve([0.1], [[0.1]], backend="gurobi")
    assert "gurobi" not in solver.available_backends()
