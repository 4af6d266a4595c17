"""Exact presolve: what enumeration of tiny subsets settles, answered without the backend.

``max_size = 0`` leaves only the empty subset. For ``min-size``, every subset of at most
``PRESOLVE_SIZE`` ones is enumerated.

If some subset of size k <= PRESOLVE_SIZE fits (|t - sum| <= eps) and none of a smaller size
does, k is the optimal size, and the best-fitting subset of that size is the optimal answer
(fewest ones, then smallest error). Checking sizes 0, 1, 2 costs O(m^2) per problem, far less
than any search, and with trained-weight targets it settles most problems; the others go to the
chosen backend unchanged. Sums of one or two coefficients are exact in float64 up to a single
rounding, the same as the recomputed errors.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .options import SolveOptions
from .problem import ProblemBatch
from .result import ChunkSolution, Status

PRESOLVE_SIZE = 2
DESCRIPTION = "min-size: subsets of at most 2 ones enumerated exactly; max_size = 0: empty subset"


@njit(cache=True, nogil=True)
def _small_subset(t, c, n, eps, max_size, mask):
    """One problem: True (and its mask) when its min-size optimum has at most 2 ones."""
    if abs(t) <= eps:  # size 0
        return True
    if max_size >= 0 and max_size < 1:
        return False
    best = np.inf
    best_i = -1
    for i in range(n):  # size 1
        e = abs(t - c[i])
        if e <= eps and e < best:
            best = e
            best_i = i
    if best_i >= 0:
        mask[best_i] = True
        return True
    if max_size >= 0 and max_size < 2:
        return False
    best_j = -1
    for i in range(n):  # size 2
        ci = c[i]
        for j in range(i + 1, n):
            e = abs(t - (ci + c[j]))
            if e <= eps and e < best:
                best = e
                best_i = i
                best_j = j
    if best_j >= 0:
        mask[best_i] = True
        mask[best_j] = True
        return True
    return False


@njit(cache=True, nogil=True)
def _small_subsets_serial(targets, coeffs, lengths, eps, max_size, solved, masks):
    for b in range(targets.shape[0]):
        solved[b] = _small_subset(targets[b], coeffs[b], lengths[b], eps, max_size, masks[b])


@njit(cache=True, parallel=True)
def _small_subsets_parallel(targets, coeffs, lengths, eps, max_size, solved, masks):
    for b in prange(targets.shape[0]):
        solved[b] = _small_subset(targets[b], coeffs[b], lengths[b], eps, max_size, masks[b])


#: batches up to this size are presolved on one thread (no parallel kernel to compile or start)
SERIAL_BATCH = 1024


def small_subsets(targets: np.ndarray, coeffs: np.ndarray, lengths: np.ndarray, eps: float,
                  max_size: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(solved (B,) bool, masks (B, m) bool): the problems whose optimal min-size answer has at
    most PRESOLVE_SIZE ones, with that answer."""
    solved = np.zeros(targets.shape[0], dtype=bool)
    masks = np.zeros(coeffs.shape, dtype=bool)
    kernel = _small_subsets_serial if len(targets) <= SERIAL_BATCH else _small_subsets_parallel
    kernel(targets, coeffs, lengths, eps, -1 if max_size is None else max_size, solved, masks)
    return solved, masks


def presolve(batch: ProblemBatch, options: SolveOptions, out: ChunkSolution) -> np.ndarray:
    """Answer exactly what tiny subsets settle, writing into ``out``; returns the (B,) bool mask of
    the problems answered (the others go to the backend)."""
    if options.max_size == 0:  # the empty subset is the only one
        error = np.abs(batch.targets)
        fits = error <= (options.eps if options.eps is not None else -1.0)
        min_size = options.objective == "min-size"
        if min_size:
            out.status[:] = np.where(fits, Status.OPTIMAL, Status.INFEASIBLE)
            out.fallback[:] = ~fits
        out.set_objective(slice(None), np.where(min_size & fits, 0.0, error), min_size)
        return np.ones(batch.size, dtype=bool)
    if options.objective != "min-size":
        return np.zeros(batch.size, dtype=bool)
    solved, masks = small_subsets(batch.targets, batch.coefficients, batch.lengths, options.eps, options.max_size)
    out.masks[solved] = masks[solved]
    out.size_bound[solved] = masks[solved].sum(axis=1)
    out.tolerance[solved] = 0.0
    return solved
