"""A validated batch of subset-sum problems and the options of one solve.

All input checking happens here, before any solving, so every backend can assume clean data:
finite float64 targets and coefficients, an int64 ``lengths`` array, padding set to zero.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .errors import SolverInputError

OBJECTIVES = ("min-error", "min-size")


@dataclass(frozen=True)
class SolveOptions:
    """Settings of one :func:`solver.solve` call (after validation)."""

    objective: str = "min-error"  # "min-error" or "min-size"
    eps: float | None = None  # min-size tolerance |t - c.s| <= eps (required for min-size)
    max_size: int | None = None  # at most this many ones per subset (fixed-size subset sum)
    time_limit: float | None = None  # seconds per problem for the search backends
    resolution: float | None = None  # CP-SAT integer grid; None = chosen from eps / objective
    device: str = "cpu"  # mitm: "cpu" or "cuda[:i]"
    engine: str | None = None  # mitm on CPU: "numba" (default) or "torch"
    workers: int = 1  # CPU cores: processes for search backends, threads for mitm
    chunk_size: int | None = None  # problems per unit of parallel work; None = backend default
    memory_limit: int = 2 * 1024**3  # bytes mitm may use for its sum tables at once
    progress: bool | None = None  # tqdm bar; None = only on a terminal and for long batches
    executor: str = "local"  # "local" (processes / in-process) or "dask"
    scheduler: str | None = None  # dask scheduler address, e.g. "tcp://10.0.0.1:8786"

    def with_(self, **changes: Any) -> "SolveOptions":
        return replace(self, **changes)


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


def _check_number(name: str, value: Any, *, low: float, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise SolverInputError(f"`{name}` must be a real number; got {value!r} instead")
    v = float(value)
    if not np.isfinite(v) or v < low or (low_open and v == low):
        bracket = "(" if low_open else "["
        raise SolverInputError(f"`{name}` must be a finite number in the range {bracket}{low}, inf); got {value!r} instead")
    return v


def _check_int(name: str, value: Any, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise SolverInputError(f"`{name}` must be an int in the range [{low}, inf); got {value!r} instead")
    if value < low:
        raise SolverInputError(f"`{name}` must be an int in the range [{low}, inf); got {value} instead")
    return int(value)


def make_options(
    objective: str = "min-error",
    eps: float | None = None,
    max_size: int | None = None,
    time_limit: float | None = None,
    resolution: float | None = None,
    device: str = "cpu",
    engine: str | None = None,
    workers: int | None = 1,
    chunk_size: int | None = None,
    memory_limit: int = 2 * 1024**3,
    progress: bool | None = None,
    executor: str = "local",
    scheduler: str | None = None,
) -> SolveOptions:
    """Check the options of :func:`solver.solve` (see there for their meaning)."""
    if objective not in OBJECTIVES:
        raise SolverInputError(f"`objective` must be one of {list(OBJECTIVES)}; got {objective!r} instead")
    if eps is not None:
        eps = _check_number("eps", eps, low=0.0)
    elif objective == "min-size":
        raise SolverInputError("`eps` is required for objective 'min-size' (the largest allowed |error|); got None")
    if max_size is not None:
        max_size = _check_int("max_size", max_size, low=0)
    if time_limit is not None:
        time_limit = _check_number("time_limit", time_limit, low=0.0, low_open=True)
    if resolution is not None:
        resolution = _check_number("resolution", resolution, low=0.0, low_open=True)
    if not isinstance(device, str) or not (device == "cpu" or device.startswith("cuda")):
        raise SolverInputError(f"`device` must be 'cpu' or 'cuda[:index]'; got {device!r} instead")
    if engine not in (None, "numba", "torch"):
        raise SolverInputError(f"`engine` must be None, 'numba' or 'torch'; got {engine!r} instead")
    if workers is None:
        workers = available_cores()
    workers = _check_int("workers", workers, low=1)
    if chunk_size is not None:
        chunk_size = _check_int("chunk_size", chunk_size, low=1)
    memory_limit = _check_int("memory_limit", memory_limit, low=1)
    if executor not in ("local", "dask"):
        raise SolverInputError(f"`executor` must be 'local' or 'dask'; got {executor!r} instead")
    if executor == "dask" and not scheduler:
        raise SolverInputError("`executor='dask'` needs `scheduler`, the address of a dask.distributed scheduler")
    return SolveOptions(
        objective=objective,
        eps=eps,
        max_size=max_size,
        time_limit=time_limit,
        resolution=resolution,
        device=device,
        engine=engine,
        workers=workers,
        chunk_size=chunk_size,
        memory_limit=memory_limit,
        progress=progress,
        executor=executor,
        scheduler=scheduler,
    )


def available_cores() -> int:
    """CPU cores this process may run on (respects affinity masks and cgroup pinning)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
