"""A validated batch of subset-sum problems.

All checking of the problems happens here (of the options: :mod:`solver.options`), before any
solving, so every backend can assume clean data: finite float64 targets and coefficients, an
int64 ``lengths`` array, padding set to zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import SolverInputError


@dataclass(frozen=True)
class ProblemBatch:
    """B problems: ``targets`` (B,), ``coefficients`` (B, m) with zero padding, ``lengths`` (B,)."""

    targets: np.ndarray
    coefficients: np.ndarray
    lengths: np.ndarray

    @property
    def size(self) -> int:
        return int(self.targets.shape[0])

    @property
    def width(self) -> int:
        return int(self.coefficients.shape[1])

    @property
    def max_length(self) -> int:
        return int(self.lengths.max()) if self.size else 0

    def take(self, index: np.ndarray | slice) -> "ProblemBatch":
        return ProblemBatch(self.targets[index], self.coefficients[index], self.lengths[index])


def _describe(x: Any) -> str:
    arr = np.asarray(x) if not isinstance(x, np.ndarray) else x
    return f"{type(x).__name__} of shape {arr.shape} and dtype {arr.dtype}"


def make_batch(targets: Any, coefficients: Any, lengths: Any = None) -> ProblemBatch:
    """Check and normalise a batch of problems.

    ``coefficients`` is (B, m). Ragged problems either pad with NaN at the end of each row
    (trailing NaN only) or pass ``lengths`` (B,), in which case entries at and beyond
    ``lengths[b]`` are ignored whatever they hold.

    Raises
    ------
    SolverInputError
        Wrong shapes, NaN or inf in a target or a used coefficient, NaN padding that is not
        trailing, lengths out of range.
    """
    try:
        t = np.asarray(targets, dtype=np.float64)
        c = np.asarray(coefficients, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise SolverInputError(
            f"`targets` and `coefficients` must be numeric arrays; got {type(targets).__name__} "
            f"and {type(coefficients).__name__} ({exc})"
        ) from exc
    if t.ndim != 1:
        raise SolverInputError(f"`targets` must have shape (B,); got {_describe(targets)}")
    if c.ndim != 2 or c.shape[0] != t.shape[0]:
        raise SolverInputError(
            f"`coefficients` must have shape (B, m) with B = len(targets) = {t.shape[0]}; "
            f"got shape {c.shape}"
        )
    bad = ~np.isfinite(t)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise SolverInputError(
            f"`targets` must be finite; got {t[i]} at index {i} "
            f"({int(bad.sum())} non-finite targets in all)"
        )
    B, m = c.shape
    if lengths is None:
        nan = np.isnan(c)
        lens = m - nan[:, ::-1].cumprod(axis=1).sum(axis=1) if m else np.zeros(B, dtype=np.int64)
        lens = np.asarray(lens, dtype=np.int64)
        inner_nan = nan & (np.arange(m)[None, :] < lens[:, None])
        if inner_nan.any():
            b, k = map(int, np.argwhere(inner_nan)[0])
            raise SolverInputError(
                f"`coefficients` may hold NaN only as trailing padding; problem {b} has NaN at "
                f"position {k} before finite values (pass `lengths` for other layouts)"
            )
    else:
        lens = np.asarray(lengths)
        if lens.shape != (B,) or not np.issubdtype(lens.dtype, np.integer):
            raise SolverInputError(
                f"`lengths` must be an integer array of shape ({B},); got {_describe(lengths)}"
            )
        lens = lens.astype(np.int64)
        if lens.size and (lens.min() < 0 or lens.max() > m):
            raise SolverInputError(
                f"`lengths` must lie in [0, {m}] (the width of `coefficients`); got values in "
                f"[{lens.min()}, {lens.max()}]"
            )
    used = np.arange(m)[None, :] < lens[:, None]
    bad = used & ~np.isfinite(c)
    if bad.any():
        b, k = map(int, np.argwhere(bad)[0])
        raise SolverInputError(
            f"`coefficients` must be finite; got {c[b, k]} in problem {b} at position {k} "
            f"({int(bad.sum())} non-finite coefficients in all)"
        )
    c = np.where(used, c, 0.0)
    return ProblemBatch(np.ascontiguousarray(t), np.ascontiguousarray(c), lens)
