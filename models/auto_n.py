"""``--n auto``: per layer, the smallest n with every weight and bias within eps.

The random values for n are a prefix of those for n + 1 (:mod:`models.random_net`), so each
problem's coefficient set only grows with n: its min-error optimum can only fall, and a problem
within eps at n stays within eps. The search therefore tries n = n_min, n_min + 1, ... (n_min = 1
unless set: n_min = 21 keeps the paper's n wherever it suffices) and re-solves at each
step only the problems still missing eps, with the run's own objective (min-error, or min-size,
whose answer misses eps exactly when no subset is within eps, as min-error's does). It stops at the
first n where none is missing, or at ``n_max`` (the misses are then reported as usual).

The answers of the last step are final: they were solved at the chosen n with the run's options,
and every backend is deterministic per problem, so solving them again would give the same masks.
:func:`models.construct.solve_layer` takes them over (``NSearch.final``) and solves only the
problems settled at an earlier n (at ``n_min = 21`` on a layer within eps there: none).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

import solver

from .layers import TargetLayer
from .problems import build_problems
from .random_net import LayerSpec, row_slices, stream


@dataclass
class Answers:
    """One row block's answers at the search's chosen n, kept as the layer's solve needs them: the
    masks packed to bits, the errors, statuses and presolve flags (about 13 bytes a problem where a
    SolveResult holds about 68; the backends' proofs per problem are not kept: the solve phase does
    not read them). ``index``: the block's problems they answer, None for all ``count`` of them."""

    index: np.ndarray | None
    count: int
    masks: np.ndarray  # np.packbits of the bool masks along each row
    width: int
    errors: np.ndarray
    status: np.ndarray
    fallback: np.ndarray
    presolved: np.ndarray
    seconds: float
    backend: str
    info: dict[str, Any]

    @classmethod
    def of(cls, index: np.ndarray, total: int, res: solver.SolveResult) -> "Answers":
        whole = len(index) == total
        return cls(None if whole else index.astype(np.int32), len(index), np.packbits(res.masks, axis=1),
                   int(res.masks.shape[1]), res.errors, res.status, res.fallback, res.presolved, res.seconds,
                   res.backend, res.info)

    def __len__(self) -> int:
        return self.count

    def result(self) -> tuple[np.ndarray, solver.SolveResult]:
        """(the problems answered, their SolveResult), the proofs NaN."""
        masks = np.unpackbits(self.masks, axis=1, count=self.width).astype(bool)
        nan = np.full(self.count, np.nan)
        index = np.arange(self.count) if self.index is None else self.index.astype(np.int64)
        return index, solver.SolveResult(masks=masks, errors=self.errors, sizes=masks.sum(axis=1), status=self.status,
                                         error_bound=nan, size_bound=nan, tolerance=nan, fallback=self.fallback,
                                         presolved=self.presolved, seconds=self.seconds, backend=self.backend,
                                         info=dict(self.info))


@dataclass
class NSearch:
    """The outcome of one layer's search, as recorded in the report."""

    n: int  # the chosen n
    reached: bool  # every weight and bias within eps at n (False: n = n_max and some miss)
    steps: list[dict[str, int]] = field(default_factory=list)  # per n tried: problems solved, still missing
    seconds: float = 0.0
    reused: int = 0  # answers of the last step taken over by the layer's solve (not solved again)
    #: per row block: the answers of the problems solved at the chosen n, or None; not recorded
    final: list[Answers | None] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The recorded fields (``final`` is neither copied nor recorded)."""
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name != "final"}


def row_blocks(spec: LayerSpec, block_problems: int) -> list[slice]:
    """The layer's output rows cut so that a block has at most ``block_problems`` problems."""
    kh, kw = spec.kernel
    per_row = spec.in_group * kh * kw * (1 if spec.input_nonneg else 2) + (1 if spec.has_bias else 0)
    return row_slices(spec.d_out, per_row, block_problems)


def choose_n(layer: TargetLayer, spec: LayerSpec, options, index: int = 0, store=None) -> NSearch:
    """The smallest n in [``options.n_min``, ``options.n_max``] at which every problem of the layer is
    within ``options.eps``.

    ``options`` is a :class:`models.options.ConstructOptions` with ``n == 'auto'``. With a
    :class:`solver.store.ChunkStore` each step's solved chunks are kept on disk (keys
    ``layer{index}-n{n}-rows{first row}-NNNNNN``) and read back on a rerun, as the final solve's are:
    a run stopped during the search resumes where it was."""
    start = time.perf_counter()
    eps = options.eps
    search = options.solve.with_(progress=False)
    blocks = row_blocks(spec, options.block_problems)
    pending: list[np.ndarray | None] = [None] * len(blocks)  # per block: problems still missing eps
    steps = []
    for n in range(options.n_min, options.n_max + 1):
        trial = replace(spec, n=n)
        solved = missing = 0
        final: list[Answers | None] = [None] * len(blocks)
        for b, (rows, values) in enumerate(zip(blocks, stream(trial, blocks))):
            targets, coeffs, lengths, _ = build_problems(layer, trial, values, rows)
            todo = np.arange(len(targets)) if pending[b] is None else pending[b]
            if todo.size:
                res = solver.solve(targets[todo], coeffs[todo], backend=options.backend, lengths=lengths[todo],
                                   store=store, store_key=f"layer{index}-n{n}-rows{rows.start:07d}", **vars(search))
                final[b] = Answers.of(todo, len(targets), res)
                solved += todo.size
                todo = todo[res.errors > eps]
            pending[b] = todo
            missing += todo.size
        steps.append({"n": n, "solved": solved, "missing": missing})
        if missing == 0 or n == options.n_max:
            return NSearch(n, missing == 0, steps, time.perf_counter() - start, final=final)
    raise AssertionError("unreachable: the loop returns at n_max")
