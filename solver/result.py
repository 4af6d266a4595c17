"""Statuses and the batch result returned by :func:`solver.solve`."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np


class Status(enum.IntEnum):
    """Whether the answer to one subset-sum problem is proved, shared by every backend.

    A status says only what was proved; whether a min-size answer misses eps is the separate
    ``fallback`` flag. Each backend maps its native statuses to these (its ``STATUS_MAP``).

    OPTIMAL
        Proved optimal, within the backend's recorded ``tolerance`` (exact backends: float64
        rounding; CP-SAT: the rounding grid; Gurobi: its tolerances).
    FEASIBLE
        A time limit stopped the search before a proof: the subset is the best found and the
        bounds (``error_bound``, ``size_bound``) give the proven gap. For ``min-size`` it may be
        a fallback (no subset within eps was found, none was proved absent either).
    INFEASIBLE
        ``min-size`` only: proved that no subset is within ``eps``; the ``min-error`` subset is
        returned instead (``fallback`` is True).
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
    error_bound: np.ndarray  # (b,) float64 proven lower bound on the smallest |error| (min-error, fallbacks); NaN if none
    size_bound: np.ndarray  # (b,) float64 proven lower bound on the ones of a subset within eps (min-size); NaN if none
    fallback: np.ndarray  # (b,) bool: min-size found no subset within eps, the min-error subset is returned
    tolerance: np.ndarray  # (b,) float64 optimality tolerance of this backend's certificate

    def put(self, index, part: "ChunkSolution") -> None:
        """Write ``part``'s rows into rows ``index`` (a slice or an index array) of this one."""
        for f in FIELDS:
            getattr(self, f)[index] = getattr(part, f)

    def set_objective(self, rows, value, min_size: bool) -> None:
        """Record a proven optimal objective value: a size for min-size answers that fit eps, an
        error for min-error answers and min-size fallbacks (``self.fallback`` must be set first)."""
        value = np.asarray(value, dtype=np.float64)
        sized = np.logical_and(min_size, ~self.fallback[rows])
        self.size_bound[rows] = np.where(sized, value, np.nan)
        self.error_bound[rows] = np.where(sized, np.nan, value)

    @classmethod
    def empty(cls, b: int, m: int) -> "ChunkSolution":
        return cls(
            masks=np.zeros((b, m), dtype=bool),
            status=np.full(b, Status.OPTIMAL, dtype=np.int8),
            error_bound=np.full(b, np.nan),
            size_bound=np.full(b, np.nan),
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
    error_bound : (B,) float64, units of the targets
        Proven lower bound on the smallest |error| of any subset (``min-error`` rows and
        ``min-size`` fallbacks); NaN elsewhere.
    size_bound : (B,) float64, a count of coefficients
        Proven lower bound on the number of ones of any subset within ``eps`` (``min-size`` rows
        that fit); NaN elsewhere.
    tolerance : (B,) float64, units of the targets
        How far from the true optimum an ``optimal`` answer may be because of the backend's
        arithmetic: for ``min-error`` the error may exceed the true optimum by this much; for
        ``min-size`` the size is at most the smallest size achievable at ``eps - tolerance``.
    fallback : (B,) bool
        ``min-size`` problems whose answer is not within ``eps`` (none exists: INFEASIBLE; none
        was found before the time limit: FEASIBLE); their mask is the ``min-error`` subset.
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
    error_bound: np.ndarray
    size_bound: np.ndarray
    tolerance: np.ndarray
    fallback: np.ndarray
    presolved: np.ndarray
    seconds: float
    backend: str
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.errors.shape[0])

    @classmethod
    def merged(cls, size: int, parts: list[tuple[np.ndarray, "SolveResult"]]) -> "SolveResult":
        """One result for ``size`` problems from results of disjoint subsets of them: each part is
        (the indices it answers, its result), and together they answer every problem once. Seconds
        add up; backend and info are the last part's (the parts must share a backend)."""
        parts = [(np.asarray(index), res) for index, res in parts if len(index)]
        answered = np.zeros(size, dtype=int)
        for index, res in parts:
            if len(index) != len(res):
                raise ValueError(f"a part answers {len(res)} problems but names {len(index)} indices")
            np.add.at(answered, index, 1)
        if not np.all(answered == 1):
            raise ValueError(f"the parts must answer each of the {size} problems once; "
                             f"{int((answered == 0).sum())} unanswered, {int((answered > 1).sum())} answered twice")
        if len({res.backend for _, res in parts}) > 1:
            raise ValueError(f"parts from different backends: {sorted({res.backend for _, res in parts})}")
        width = max((res.masks.shape[1] for _, res in parts), default=0)
        arrays = {}
        for name in ("masks", "errors", "sizes", "status", "error_bound", "size_bound", "tolerance", "fallback",
                     "presolved"):
            like = getattr(parts[0][1], name) if parts else np.zeros(0)
            out = np.zeros((size, width) if name == "masks" else size, dtype=like.dtype)
            for index, res in parts:
                value = getattr(res, name)
                if name == "masks":
                    out[index, :value.shape[1]] = value
                else:
                    out[index] = value
            arrays[name] = out
        last = parts[-1][1] if parts else None
        return cls(**arrays, seconds=sum(res.seconds for _, res in parts),
                   backend=last.backend if last else "none", info=dict(last.info) if last else {})

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
            parts.append(f"{counts['infeasible']} infeasible")
        misses = int(self.fallback.sum())
        if misses:
            parts.append(f"{misses} not within eps (min-error fallback)")
        max_err = float(self.errors.max()) if len(self) else 0.0
        return (
            f"{len(self)} problems with {self.backend}: {', '.join(parts)}; "
            f"max error {max_err:.3g}; {self.seconds:.3g} s"
        )

    def __repr__(self) -> str:
        m = self.masks.shape[1] if self.masks.ndim == 2 else 0
        return f"SolveResult(B={len(self)}, m={m}, backend={self.backend!r}: {self.summary()})"
