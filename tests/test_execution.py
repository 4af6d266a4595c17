"""Results do not depend on the number of workers, the chunk size, or the mitm engine/device."""

from __future__ import annotations

import numpy as np
import pytest

import solver

from .conftest import requires_gurobi
from .problems import random_instances


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(99)
    return random_instances(rng, 400, 1, 18)[:2]


@pytest.mark.parametrize("objective", ["min-error", "min-size"])
def test_mitm_threads_and_chunks_do_not_change_results(batch, objective):
    t, c = batch
    ref = solver.solve(t, c, objective, eps=0.01, backend="mitm", workers=1)
    for workers, chunk in ((2, None), (2, 7), (1, 1000)):
        res = solver.solve(t, c, objective, eps=0.01, backend="mitm", workers=workers, chunk_size=chunk)
        assert np.array_equal(res.masks, ref.masks)
        assert np.array_equal(res.status, ref.status)


def test_cpsat_process_pool_equals_serial(batch):
    t, c = batch[0][:120], batch[1][:120]
    serial = solver.solve(t, c, "min-size", eps=0.01, backend="cpsat", workers=1)
    pooled = solver.solve(t, c, "min-size", eps=0.01, backend="cpsat", workers=2, chunk_size=13)
    assert np.array_equal(serial.masks, pooled.masks)
    assert np.array_equal(serial.status, pooled.status)
    assert np.array_equal(serial.size_bound, pooled.size_bound, equal_nan=True)
    assert np.array_equal(serial.error_bound, pooled.error_bound, equal_nan=True)


@requires_gurobi
def test_gurobi_process_pool_equals_serial(batch):
    t, c = batch[0][:12], batch[1][:12]
    serial = solver.solve(t, c, "min-size", eps=0.01, backend="gurobi", workers=1)
    pooled = solver.solve(t, c, "min-size", eps=0.01, backend="gurobi", workers=2, chunk_size=5)
    assert np.array_equal(serial.masks, pooled.masks)


@pytest.mark.parametrize("objective", ["min-error", "min-size"])
def test_torch_engine_agrees_with_numba(batch, objective):
    t, c = batch
    a = solver.solve(t, c, objective, eps=0.01, backend="mitm")
    b = solver.solve(t, c, objective, eps=0.01, backend="mitm", engine="torch", chunk_size=64)
    assert np.all(np.abs(a.errors - b.errors) <= a.tolerance + b.tolerance)
    assert np.array_equal(a.status, b.status)
    if objective == "min-size":
        assert np.array_equal(a.sizes, b.sizes)


@pytest.mark.gpu
def test_cuda_engine_agrees_with_numba(batch):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: torch.cuda.is_available() is False")
    t, c = batch
    for objective in ("min-error", "min-size"):
        a = solver.solve(t, c, objective, eps=0.01, backend="mitm")
        b = solver.solve(t, c, objective, eps=0.01, backend="mitm", device="cuda")
        assert np.all(np.abs(a.errors - b.errors) <= a.tolerance + b.tolerance)
        assert np.array_equal(a.status, b.status)


@requires_gurobi
def test_gurobi_size_limited_licence_is_reported_as_licence():
    from solver import LicenseError
    from solver.backends.gurobi import GurobiBackend

    if not GurobiBackend.is_installed():
        pytest.skip("gurobipy not installed")
    c = np.random.default_rng(0).uniform(-1, 1, (1, 2100))
    try:
        solver.solve([0.3], c, backend="gurobi", time_limit=1.0)
    except LicenseError as exc:
        assert "size-limited licence" in str(exc)
    else:
        pytest.skip("this Gurobi licence is not size-limited")


@pytest.mark.parametrize("objective", ["min-error", "min-size"])
def test_parallel_and_serial_kernels_agree(objective):
    """Small batches run single-threaded kernels, large ones parallel ones: same answers."""
    from solver.backends.mitm import SERIAL_BATCH

    rng = np.random.default_rng(11)
    t, c, _ = random_instances(rng, 3 * SERIAL_BATCH, 1, 14)
    big = solver.solve(t, c, objective, eps=0.01, backend="mitm", workers=2)  # parallel kernels
    parts = [solver.solve(t[i:i + 500], c[i:i + 500], objective, eps=0.01, backend="mitm", workers=2)
             for i in range(0, len(t), 500)]  # serial kernels
    for field in ("masks", "status", "presolved"):
        assert np.array_equal(getattr(big, field), np.concatenate([getattr(p, field) for p in parts])), field


def test_merged_results_equal_one_solve_of_all(batch):
    t, c = batch
    whole = solver.solve(t, c, "min-size", eps=0.01, backend="mitm")
    odd, even = np.arange(1, len(t), 2), np.arange(0, len(t), 2)
    parts = [(i, solver.solve(t[i], c[i], "min-size", eps=0.01, backend="mitm")) for i in (odd, even)]
    merged = solver.SolveResult.merged(len(t), parts)
    for name in ("masks", "errors", "sizes", "status", "error_bound", "size_bound", "tolerance", "fallback"):
        assert np.array_equal(getattr(merged, name), getattr(whole, name), equal_nan=True), name
    with pytest.raises(ValueError, match="answer each of the 400 problems once; 200 unanswered, 0 answered twice"):
        solver.SolveResult.merged(len(t), parts[:1])
    with pytest.raises(ValueError, match="0 unanswered, 200 answered twice"):
        solver.SolveResult.merged(len(t), parts + parts[:1])
