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

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

import solver

from .graph import TargetLayer
from .problems import build_problems
from .random_net import LayerSpec, row_slices, stream


@dataclass
class NSearch:
    """The outcome of one layer's search, as recorded in the report."""

    n: int  # the chosen n
    reached: bool  # every weight and bias within eps at n (False: n = n_max and some miss)
    steps: list[dict[str, int]] = field(default_factory=list)  # per n tried: problems solved, still missing
    seconds: float = 0.0
    reused: int = 0  # answers of the last step taken over by the layer's solve (not solved again)
    #: per row block: (the problems solved at the chosen n, their answers), or None; not recorded
    final: list[tuple[np.ndarray, solver.SolveResult] | None] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "final"}


def row_blocks(spec: LayerSpec, block_problems: int) -> list[slice]:
    """The layer's output rows cut so that a block has at most ``block_problems`` problems."""
    kh, kw = spec.kernel
    per_row = spec.in_group * kh * kw * (1 if spec.input_nonneg else 2) + (1 if spec.has_bias else 0)
    return row_slices(spec.d_out, per_row, block_problems)


def choose_n(layer: TargetLayer, spec: LayerSpec, options) -> NSearch:
    """The smallest n in [``options.n_min``, ``options.n_max``] at which every problem of the layer is
    within ``options.eps``.

    ``options`` is a :class:`models.construct.ConstructOptions` with ``n == 'auto'``."""
    start = time.perf_counter()
    eps = options.eps
    search = options.solve.with_(progress=False)
    blocks = row_blocks(spec, options.block_problems)
    pending: list[np.ndarray | None] = [None] * len(blocks)  # per block: problems still missing eps
    steps = []
    for n in range(options.n_min, options.n_max + 1):
        trial = replace(spec, n=n)
        solved = missing = 0
        final: list[tuple[np.ndarray, solver.SolveResult] | None] = [None] * len(blocks)
        for b, (rows, values) in enumerate(zip(blocks, stream(trial, blocks))):
            targets, coeffs, lengths, _ = build_problems(layer, trial, values, rows)
            todo = np.arange(len(targets)) if pending[b] is None else pending[b]
            if todo.size:
                res = solver.solve(targets[todo], coeffs[todo], backend=options.backend, lengths=lengths[todo],
                                   **vars(search))
                final[b] = (todo, res)
                solved += todo.size
                todo = todo[res.errors > eps]
            pending[b] = todo
            missing += todo.size
        steps.append({"n": n, "solved": solved, "missing": missing})
        if missing == 0 or n == options.n_max:
            return NSearch(n, missing == 0, steps, time.perf_counter() - start, final=final)
    raise AssertionError("unreachable: the loop returns at n_max")
