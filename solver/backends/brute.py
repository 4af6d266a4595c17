"""`brute`: exhaustive enumeration of all 2^m subsets, the obviously-correct reference for tests."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..errors import ProblemTooLargeError
from ..options import SolveOptions
from ..problem import ProblemBatch
from ..result import ChunkSolution, Status
from .base import Backend
from .mitm import float_tolerance

MAX_M = 22


@lru_cache(maxsize=8)
def subset_table(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(2^n, n) 0/1 float64 table of every subset of n items, and the (2^n,) subset sizes."""
    codes = np.arange(1 << n, dtype=np.int64)
    bits = ((codes[:, None] >> np.arange(n)[None, :]) & 1).astype(np.float64)
    return bits, bits.sum(axis=1).astype(np.int64)


class BruteBackend(Backend):
    name = "brute"
    default_chunk_size = 64

    def check(self, batch: ProblemBatch, options: SolveOptions) -> None:
        super().check(batch, options)
        if batch.max_length > MAX_M:
            raise ProblemTooLargeError(
                f"backend 'brute' enumerates 2^m subsets and is limited to m <= {MAX_M}; got "
                f"m={batch.max_length}; use backend='mitm' (exact, O(2^(m/2)))"
            )

    def certificate(self, options: SolveOptions) -> dict:
        return {"method": "enumeration of all 2^m subsets", "tolerance": "float64 rounding"}

    def solve_chunk(self, batch: ProblemBatch, options: SolveOptions) -> ChunkSolution:
        b, m = batch.coefficients.shape
        out = ChunkSolution.empty(b, m)
        for p in range(b):
            n = int(batch.lengths[p])
            bits, sizes = subset_table(n)
            err = np.abs(batch.targets[p] - bits @ batch.coefficients[p, :n])
            if options.max_size is not None:
                err = np.where(sizes <= options.max_size, err, np.inf)
            best = int(np.argmin(err))
            out.error_bound[p] = err[best]
            if options.objective == "min-size":
                fits = err <= options.eps
                if fits.any():
                    smallest = sizes[fits].min()
                    best = int(np.argmin(np.where(fits & (sizes == smallest), err, np.inf)))
                    out.size_bound[p], out.error_bound[p] = smallest, np.nan
                else:
                    out.status[p] = Status.INFEASIBLE
                    out.fallback[p] = True
            out.masks[p, :n] = bits[best] > 0
        out.tolerance = float_tolerance(batch)
        return out
