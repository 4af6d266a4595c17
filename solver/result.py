"""Statuses and the batch result returned by :func:`solver.solve`."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np


class Status(enum.IntEnum):
    """Outcome of one subset-sum problem, shared by every backend.

    OPTIMAL
        The backend proved the returned subset optimal (for CP-SAT: optimal for the problem
        rounded at the recorded resolution, see ``SolveResult.tolerance``).
    FEASIBLE
        A time limit stopped the search; the subset is the best found, ``bound`` holds the
        best proven bound so the gap can be read off.
    INFEASIBLE
        ``min-size`` only: no subset is within ``eps`` of the target. The returned subset is
        the ``min-error`` solution instead (``fallback`` is True for that problem).
    """

    OPTIMAL = 0
    FEASIBLE = 1
    INFEASIBLE = 2


@dataclass
class ChunkSolution:
    """What a backend returns for one chunk of problems (a pure function's output).

    Errors are *not* part of it: :func:`solver.solve` recomputes them in float64 from the
    masks so no backend's own arithmetic is trusted.
    """

    masks: np.ndarray  # (b, m) bool: kept coefficients
    status: np.ndarray  # (b,) int8 Status codes
    bound: np.ndarray  # (b,) float64 proven lower bound on the objective, NaN if none
    fallback: np.ndarray  # (b,) bool: min-size infeasible, min-error subset returned
    tolerance: np.ndarray  # (b,) float64 optimality tolerance of this backend's certificate

    def put(self, index, part: "ChunkSolution") -> None:
        """Write ``part``'s rows into rows ``index`` (a slice or an index array) of this one."""
        for f in FIELDS:
            getattr(self, f)[index] = getattr(part, f)

    @classmethod
    def empty(cls, b: int, m: int) -> "ChunkSolution":
        return cls(
            masks=np.zeros((b, m), dtype=bool),
            status=np.full(b, Status.OPTIMAL, dtype=np.int8),
            bound=np.full(b, np.nan),
            fallback=np.zeros(b, dtype=bool),
            tolerance=np.zeros(b),
        )


FIELDS = tuple(f.name for f in fields(ChunkSolution))


@dataclass
class SolveResult:
    """Solutions of a batch of subset-sum problems.

    Attributes
    ----------
    masks : (B, m) bool
        ``masks[b, k]`` is True iff coefficient k is kept in problem b (padding is False).
    errors : (B,) float64
        ``|target - sum(kept coefficients)|`` recomputed here in float64 from the masks.
    sizes : (B,) int
        Number of kept coefficients.
    status : (B,) int8
        :class:`Status` codes.
    bound : (B,) float64
        The backend's proven lower bound on the objective (error for ``min-error``, subset
        size for ``min-size``); NaN where the backend gives none.
    tolerance : (B,) float64
        How far from the true optimum an ``optimal`` answer may be because of the backend's
        arithmetic: for ``min-error`` the error may exceed the true optimum by this much; for
        ``min-size`` the size is at most the smallest size achievable at ``eps - tolerance``.
    fallback : (B,) bool
        ``min-size`` problems that had no subset within ``eps``; their mask is the
        ``min-error`` subset.
    presolved : (B,) bool
        Problems answered by the exact presolve without calling the backend.
    seconds : float
        Wall-clock seconds of the whole call (validation, presolve, solve, error recomputation).
    backend : str
        Name of the backend that solved the problems.
    info : dict
        Options and certificate parameters (resolution, solver tolerances, device, workers).
    """

    masks: np.ndarray
    errors: np.ndarray
    sizes: np.ndarray
    status: np.ndarray
    bound: np.ndarray
    tolerance: np.ndarray
    fallback: np.ndarray
    presolved: np.ndarray
    seconds: float
    backend: str
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.errors.shape[0])

    def status_counts(self) -> dict[str, int]:
        """Number of problems per status name, e.g. ``{'optimal': 998, 'feasible': 2, ...}``."""
        return {s.name.lower(): int(np.count_nonzero(self.status == s)) for s in Status}

    @property
    def success(self) -> bool:
        """True when every problem was proved optimal."""
        return bool(np.all(self.status == Status.OPTIMAL))

    def summary(self) -> str:
        """One line: counts per status, the largest error and the time."""
        counts = self.status_counts()
        parts = [f"{counts['optimal']} optimal"]
        if counts["feasible"]:
            parts.append(f"{counts['feasible']} hit the time limit")
        if counts["infeasible"]:
            parts.append(f"{counts['infeasible']} infeasible (min-error fallback)")
        max_err = float(self.errors.max()) if len(self) else 0.0
        return (
            f"{len(self)} problems with {self.backend}: {', '.join(parts)}; "
            f"max error {max_err:.3g}; {self.seconds:.3g} s"
        )

    def __repr__(self) -> str:
        m = self.masks.shape[1] if self.masks.ndim == 2 else 0
        return f"SolveResult(B={len(self)}, m={m}, backend={self.backend!r}: {self.summary()})"
