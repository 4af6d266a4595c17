"""Exact subset-sum solving for strong lottery tickets.

Each target weight t and its random coefficients c_1..c_m give one small integer program:
``min-error`` minimises |t - sum_{k in S} c_k| over subsets S; ``min-size`` finds the fewest
coefficients with |t - sum| <= eps (then the smallest error), falling back to min-error when
no subset is that close. :func:`solve` solves a batch of them with a chosen backend:

* ``mitm`` - exact meet-in-the-middle, batched on CPU threads (numba) or CUDA (torch);
* ``cpsat`` - OR-Tools CP-SAT on the problem rounded to a recorded integer resolution;
* ``gurobi`` - Gurobi MILP with tight recorded tolerances (optional extra);
* ``brute`` - exhaustive reference for small m;
* ``auto`` - the fastest exact backend for the objective and m.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .backends import AUTO_MITM_MAX_M, available_backends, choose_backend, get_backend
from .errors import (
    BackendCapabilityError,
    BackendUnavailableError,
    LicenseError,
    ProblemTooLargeError,
    SolverError,
    SolverInputError,
    UnknownBackendError,
)
from .execution import recompute_errors, run_chunks
from .problem import ProblemBatch, SolveOptions, make_batch, make_options
from .result import ChunkSolution, SolveResult, Status

__all__ = [
    "AUTO_MITM_MAX_M",
    "BackendCapabilityError",
    "BackendUnavailableError",
    "LicenseError",
    "ProblemTooLargeError",
    "SolveResult",
    "SolverError",
    "SolverInputError",
    "Status",
    "UnknownBackendError",
    "available_backends",
    "solve",
]


def solve(
    targets: Any,
    coefficients: Any,
    objective: str = "min-error",
    eps: float | None = None,
    backend: str = "auto",
    *,
    lengths: Any = None,
    max_size: int | None = None,
    time_limit: float | None = None,
    resolution: float | None = None,
    device: str = "cpu",
    engine: str | None = None,
    workers: int | None = 1,
    chunk_size: int | None = None,
    memory_limit: int = 2 * 1024**3,
    progress: bool | None = None,
    presolve: bool = True,
    executor: str = "local",
    scheduler: str | None = None,
    store: Any = None,
    store_key: str = "chunks",
) -> SolveResult:
    """Solve a batch of subset-sum problems exactly.

    Parameters
    ----------
    targets : array (B,)
        The target values t (e.g. weights of a trained layer).
    coefficients : array (B, m)
        The coefficients of each problem. Ragged problems: pad with trailing NaN, or pass
        ``lengths``.
    objective : {'min-error', 'min-size'}
        ``min-error``: minimise |t - c.s|. ``min-size``: fewest ones with |t - c.s| <= eps,
        ties broken by the smallest error; when no subset is within eps the min-error subset
        is returned with status INFEASIBLE and ``fallback`` set.
    eps : float, optional
        Error tolerance; required for ``min-size``.
    backend : str
        'auto' (default), 'mitm', 'cpsat', 'gurobi' or 'brute'; see :func:`available_backends`.
    lengths : int array (B,), optional
        Number of coefficients used by each problem (entries beyond are ignored).
    max_size : int, optional
        At most this many ones per subset.
    time_limit : float, optional
        Seconds per problem (cpsat, gurobi); a stopped search reports status FEASIBLE.
    resolution : float, optional
        cpsat's integer grid (absolute); default chosen from eps (min-size) or 1e-7 relative.
    device, engine : str
        mitm only: 'cpu' or 'cuda[:i]'; on CPU engine 'numba' (default) or 'torch'.
    workers : int or None
        CPU cores to use: worker processes (cpsat, gurobi, brute) or threads (mitm). None = all.
    chunk_size : int, optional
        Problems per unit of parallel work (default per backend). Results do not depend on it.
    memory_limit : int
        Bytes mitm may use for its sum tables; larger problems are refused with advice.
    progress : bool or None
        Show a progress bar; None shows one on a terminal when there are several chunks.
    presolve : bool
        Exact presolve before the backend: ``min-size`` problems whose optimum has at most 2
        ones are answered by enumerating those subsets; ``max_size=0`` gives the empty subset.
        False sends every problem to the backend (to measure the backend alone).
    executor, scheduler : str
        'local' (default) or 'dask' with the scheduler's address; results are identical.
    store, store_key
        A :class:`solver.store.ChunkStore`: finished chunks (named ``store_key-NNNNNN``) are read
        back instead of solved, new ones are written atomically as they finish (resumable runs).

    Returns
    -------
    SolveResult
        masks, errors (recomputed in float64), sizes, status, bound, tolerance, fallback,
        presolved, seconds, backend, info.

    Raises
    ------
    SolverInputError, UnknownBackendError, BackendUnavailableError, LicenseError,
    BackendCapabilityError, ProblemTooLargeError
    """
    start = time.perf_counter()
    batch = make_batch(targets, coefficients, lengths)
    options = make_options(
        objective=objective, eps=eps, max_size=max_size, time_limit=time_limit,
        resolution=resolution, device=device, engine=engine, workers=workers,
        chunk_size=chunk_size, memory_limit=memory_limit, progress=progress,
        executor=executor, scheduler=scheduler,
    )
    name = choose_backend(options.objective, batch.max_length) if backend == "auto" else backend
    chosen = get_backend(name)
    chosen.check(batch, options)
    options = chosen.prepare(batch, options)

    out = ChunkSolution.empty(batch.size, batch.width)
    presolved = np.zeros(batch.size, dtype=bool)
    if presolve:
        presolved = _presolve(batch, options, out)
    rest = np.flatnonzero(~presolved)
    if rest.size:
        part = run_chunks(chosen, batch.take(rest), options, store=store, store_key=store_key)
        out.put(rest, part)

    errors = recompute_errors(batch, out.masks)
    info = {
        "requested_backend": backend,
        "objective": options.objective,
        "eps": options.eps,
        "max_size": options.max_size,
        "time_limit": options.time_limit,
        "workers": options.workers,
        "executor": options.executor,
        "chunk_size": options.chunk_size,
        "certificate": chosen.certificate(options),
        "presolve": ("min-size: subsets of at most 2 ones enumerated exactly; max_size = 0: empty subset"
                     if presolve else "off"),
    }
    return SolveResult(
        masks=out.masks,
        errors=errors,
        sizes=out.masks.sum(axis=1),
        status=out.status,
        bound=out.bound,
        tolerance=out.tolerance,
        fallback=out.fallback,
        presolved=presolved,
        seconds=time.perf_counter() - start,
        backend=name,
        info=info,
    )


def _presolve(batch: ProblemBatch, options: SolveOptions, out: ChunkSolution) -> np.ndarray:
    """Answer exactly, without the backend, what enumeration of tiny subsets settles."""
    if options.max_size == 0:
        fits = np.abs(batch.targets) <= (options.eps if options.eps is not None else -1.0)
        out.bound[:] = np.abs(batch.targets)
        if options.objective == "min-size":
            out.status[:] = np.where(fits, Status.OPTIMAL, Status.INFEASIBLE)
            out.fallback[:] = ~fits
            out.bound[:] = np.where(fits, 0.0, np.abs(batch.targets))
        return np.ones(batch.size, dtype=bool)
    if options.objective != "min-size":
        return np.zeros(batch.size, dtype=bool)
    from .presolve import small_subsets

    solved, masks = small_subsets(batch.targets, batch.coefficients, batch.lengths, options.eps, options.max_size)
    out.masks[solved] = masks[solved]
    out.bound[solved] = masks[solved].sum(axis=1)
    out.tolerance[solved] = 0.0
    return solved
