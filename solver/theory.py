"""Exact quantities of random subset sum used to test the theory (`lottery claims`).

``sup_error(c, lo, hi)``: the largest distance from a point of [lo, hi] to the nearest subset
sum of c, i.e. how well the *worst* target in the interval can be approximated. With all 2^m
subset sums sorted (generated already sorted by merging, O(2^m)), the distance function is
piecewise linear, so its maximum on [lo, hi] is attained at lo, at hi, or at the midpoint of two
consecutive sums that lies inside the interval (half their gap). Exact up to float64 rounding.

``sup_error_prefixes(c, lo, hi)``: the same for every prefix c[:, :1], c[:, :2], ..., c[:, :m] at
about twice the cost of the last alone (the merge builds the prefixes' sums on the way): m
coefficients drawn once give a valid draw for every smaller m, and the sup error never rises
with m along one draw.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .errors import ProblemTooLargeError, SolverInputError

MAX_M = 26


@njit(cache=True, nogil=True)
def _merge_into(cj, src, size, dst):
    """dst[:2 size] = the sorted union of src[:size] (sorted) and src[:size] + cj; src[size] is overwritten.

    The same sentinel merge as ``backends._mitm_numba._sorted_subset_sums`` without the subset
    masks that one carries: at m = 26 the masks alone would be 1 GiB per thread."""
    src[size] = np.inf  # sentinel: ends each stream of the merge
    i = 0
    k = 0
    x = src[0]
    y = src[0] + cj
    for w in range(2 * size):
        if x <= y:
            dst[w] = x
            i += 1
            x = src[i]
        else:
            dst[w] = y
            k += 1
            y = src[k] + cj


@njit(cache=True, nogil=True)
def _sup_error_sorted(s, size, lo, hi):
    # distance of lo and hi to the set (binary search for the first sum >= x)
    best = 0.0
    for x in (lo, hi):
        left = 0
        right = size
        while left < right:
            mid = (left + right) // 2
            if s[mid] < x:
                left = mid + 1
            else:
                right = mid
        d = np.inf
        if left < size:
            d = s[left] - x
        if left > 0 and x - s[left - 1] < d:
            d = x - s[left - 1]
        if d > best:
            best = d
    # half gaps whose midpoint lies in [lo, hi]
    for i in range(size - 1):
        mid = 0.5 * (s[i] + s[i + 1])
        if mid < lo:
            continue
        if mid > hi:
            break
        g = 0.5 * (s[i + 1] - s[i])
        if g > best:
            best = g
    return best


@njit(cache=True, parallel=True)
def _sup_prefix_batch(coeffs, lo, hi, out, n_blocks):
    count, m = coeffs.shape
    per_block = (count + n_blocks - 1) // n_blocks
    for blk in prange(n_blocks):
        a = np.empty((1 << m) + 1)
        b = np.empty((1 << m) + 1)
        for r in range(blk * per_block, min(count, (blk + 1) * per_block)):
            a[0] = 0.0
            size = 1
            src, dst = a, b
            for j in range(m):  # the sums of c[:j + 1] from those of c[:j]: one merge step
                _merge_into(coeffs[r, j], src, size, dst)
                size *= 2
                out[r, j] = _sup_error_sorted(dst, size, lo, hi)
                src, dst = dst, src


def _checked(coefficients: np.ndarray, lo: float, hi: float) -> np.ndarray:
    c = np.ascontiguousarray(np.asarray(coefficients, dtype=np.float64))
    if c.ndim != 2:
        raise SolverInputError(f"`coefficients` must have shape (S, m); got shape {c.shape}")
    if not np.isfinite(c).all():
        raise SolverInputError("`coefficients` must be finite")
    if not lo <= hi:
        raise SolverInputError(f"the interval must satisfy lo <= hi; got [{lo}, {hi}]")
    if c.shape[1] > MAX_M:
        raise ProblemTooLargeError(f"sup_error materialises all 2^m sums; m <= {MAX_M}, got m={c.shape[1]}")
    return c


def _threads(threads: int | None) -> int:
    import numba

    threads = numba.config.NUMBA_NUM_THREADS if threads is None else max(1, min(threads, numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(threads)
    return threads


def sup_error_prefixes(coefficients: np.ndarray, lo: float = -1.0, hi: float = 1.0,
                       threads: int | None = None) -> np.ndarray:
    """(S, m): column j is :func:`sup_error` of ``coefficients[:, :j + 1]``, all in one pass per row."""
    return _prefixes(_checked(coefficients, lo, hi), lo, hi, threads)


def _prefixes(c: np.ndarray, lo: float, hi: float, threads: int | None) -> np.ndarray:
    threads = _threads(threads)
    out = np.empty(c.shape)
    if c.shape[0] and c.shape[1]:
        _sup_prefix_batch(c, float(lo), float(hi), out, max(1, min(c.shape[0], threads * 4)))
    return out


def sup_error(coefficients: np.ndarray, lo: float = -1.0, hi: float = 1.0, threads: int | None = None) -> np.ndarray:
    """Exact sup over z in [lo, hi] of min over subsets |z - subset sum|, per row of ``coefficients``.

    coefficients: (S, m) float64 with m <= MAX_M (2^m sums are materialised per thread). The last
    column of :func:`sup_error_prefixes` (the prefixes' scans add little to the merges).
    """
    c = _checked(coefficients, lo, hi)
    if c.shape[1] == 0:  # the empty sum alone
        return np.full(c.shape[0], max(abs(float(lo)), abs(float(hi))))
    return _prefixes(c, lo, hi, threads)[:, -1].copy()


def sup_error_grid(coefficients: np.ndarray, lo: float, hi: float, points: int) -> np.ndarray:
    """The same quantity on a grid of ``points`` targets (a brute-force check for small m)."""
    c = np.asarray(coefficients, dtype=np.float64)
    m = c.shape[1]
    codes = np.arange(1 << m)
    bits = ((codes[:, None] >> np.arange(m)[None, :]) & 1).astype(np.float64)
    z = np.linspace(lo, hi, points)
    out = np.empty(c.shape[0])
    for r in range(c.shape[0]):
        sums = np.sort(bits @ c[r])
        idx = np.clip(np.searchsorted(sums, z), 1, len(sums) - 1)
        d = np.minimum(np.abs(z - sums[idx - 1]), np.abs(z - sums[idx]))
        if len(sums) == 1:
            d = np.abs(z - sums[0])
        out[r] = d.max()
    return out
