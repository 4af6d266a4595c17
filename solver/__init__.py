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

import inspect
import time
from dataclasses import fields
from typing import Any

import numpy as np

from .backends import AUTO_MITM_MAX_M, Backend, available_backends, choose_backend, get_backend
from .errors import (
    BackendCapabilityError,
    BackendUnavailableError,
    LicenseError,
    ProblemTooLargeError,
    LotteryError,
    SolverError,
    SolverInputError,
    SolverTypeError,
    UnknownBackendError,
)
from .execution import recompute_errors, run_chunks
from .options import SolveOptions
from .presolve import DESCRIPTION as PRESOLVE_DESCRIPTION
from .presolve import presolve as _presolve
from .problem import make_batch
from .result import ChunkSolution, SolveResult, Status

__all__ = [
    "AUTO_MITM_MAX_M",
    "BackendCapabilityError",
    "BackendUnavailableError",
    "LicenseError",
    "ProblemTooLargeError",
    "SolveOptions",
    "SolveResult",
    "LotteryError",
    "SolverError",
    "SolverInputError",
    "SolverTypeError",
    "Status",
    "UnknownBackendError",
    "available_backends",
    "solve",
]


def solve(targets: Any, coefficients: Any, objective: str = "min-error", eps: float | None = None,
          backend: str | Backend = "auto", *, lengths: Any = None, store: Any = None, store_key: str = "chunks",
          **options: Any) -> SolveResult:
    """Solve a batch of subset-sum problems exactly.

    Parameters
    ----------
    targets : array (B,)
        The target values t (e.g. weights of a trained layer).
    coefficients : array (B, m)
        The coefficients of each problem. Ragged problems: pad with trailing NaN, or pass
        ``lengths``.
    objective, eps
        ``min-error``: minimise |t - c.s|. ``min-size``: fewest ones with |t - c.s| <= eps,
        ties broken by the smallest error; when no subset is within eps the min-error subset
        is returned with ``fallback`` set (status INFEASIBLE when that is proved).
    backend : str or Backend
        'auto' (default), 'mitm', 'cpsat', 'gurobi' or 'brute' (see :func:`available_backends`),
        or a :class:`solver.backends.Backend` instance.
    lengths : int array (B,), optional
        Number of coefficients used by each problem (entries beyond are ignored).
    store, store_key
        A :class:`solver.store.ChunkStore`: finished chunks (named ``store_key-NNNNNN``) are read
        back instead of solved, new ones are written atomically as they finish (resumable runs).
    **options
        The fields of :class:`solver.SolveOptions` (validated there):
{options_doc}

    Returns
    -------
    SolveResult
        masks, errors (recomputed in float64), sizes, status, error_bound, size_bound,
        tolerance, fallback, presolved, seconds, backend, info.

    Raises
    ------
    SolverInputError, SolverTypeError, UnknownBackendError, BackendUnavailableError,
    LicenseError, BackendCapabilityError, ProblemTooLargeError
    """
    start = time.perf_counter()
    batch = make_batch(targets, coefficients, lengths)
    opts = SolveOptions.from_kwargs(objective=objective, eps=eps, **options)
    if isinstance(backend, Backend):
        chosen = backend
    else:
        chosen = get_backend(choose_backend(opts.objective, batch.max_length) if backend == "auto" else backend)
    chosen.check(batch, opts)
    opts = chosen.prepare(batch, opts)

    out = ChunkSolution.empty(batch.size, batch.width)
    presolved = _presolve(batch, opts, out) if opts.presolve else np.zeros(batch.size, dtype=bool)
    rest = np.flatnonzero(~presolved)
    if rest.size:
        part = run_chunks(chosen, batch.take(rest), opts, store=store, store_key=store_key)
        out.put(rest, part)

    info = {
        "requested_backend": backend if isinstance(backend, str) else chosen.name,
        **{k: getattr(opts, k) for k in ("objective", "eps", "max_size", "time_limit", "workers", "executor",
                                         "chunk_size")},
        "certificate": chosen.certificate(opts),
        "presolve": PRESOLVE_DESCRIPTION if opts.presolve else "off",
    }
    return SolveResult(
        masks=out.masks,
        errors=recompute_errors(batch, out.masks),
        sizes=out.masks.sum(axis=1),
        status=out.status,
        error_bound=out.error_bound,
        size_bound=out.size_bound,
        tolerance=out.tolerance,
        fallback=out.fallback,
        presolved=presolved,
        seconds=time.perf_counter() - start,
        backend=chosen.name,
        info=info,
    )


def _derive_signature() -> None:
    """solve's keyword options are SolveOptions' fields: show them in its signature and docstring."""
    sig = inspect.signature(solve)
    params = [p for p in sig.parameters.values() if p.kind != p.VAR_KEYWORD]
    named = {p.name for p in params}
    extra = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type)
             for f in fields(SolveOptions) if f.name not in named]
    solve.__signature__ = sig.replace(parameters=params + extra)
    lines = [f"        {f.name} : {f.metadata['doc']} (default {f.default!r})"
             for f in fields(SolveOptions) if f.name not in named]
    solve.__doc__ = solve.__doc__.replace("{options_doc}", "\n".join(lines))


_derive_signature()
