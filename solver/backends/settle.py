"""Settling in float64 the band of subsets a rounded or tolerance-based solver cannot tell apart.

cpsat and gurobi answer on a grid or within tolerances; every subset that could be the float64
optimum lies in a band they can describe (grid error <= e / delta + (m + 1) / 2 for cpsat,
|t - c.s| <= e + tolerances for gurobi). Each backend enumerates that band; these functions pick
the float64 answer from it, the same way for both. ``settled`` is a list of (ones, float64 error,
mask); ``complete`` says whether the enumeration ran to its end (a time limit may stop it).
"""

from __future__ import annotations

import numpy as np

from ..result import Status

Settled = list[tuple[int, float, np.ndarray]]


def best_min_error(settled: Settled, complete: bool, mask: np.ndarray, error: float, status: Status,
                   bound: float) -> tuple[np.ndarray, Status, float]:
    """The solver's answer (``mask`` with float64 ``error``, its ``status`` and proven ``bound``)
    replaced by the band's smallest float64 error; OPTIMAL only if the solver proved its optimum and
    the band was enumerated completely (then the bound is the answer's error)."""
    if settled:
        _, err, best = min(settled, key=lambda f: f[1])
        if err < error:
            mask, error = best, err
    exact = status == Status.OPTIMAL and complete
    return mask, Status.OPTIMAL if exact else Status.FEASIBLE, error if exact else bound


def best_min_size(settled: Settled, complete: bool, eps: float) -> tuple[int, np.ndarray, Status] | None:
    """The fewest ones with float64 error <= eps, then the smallest error; None if the band holds no
    subset within eps. OPTIMAL when the enumeration was complete."""
    fits = [f for f in settled if f[1] <= eps]
    if not fits:
        return None
    size, _, mask = min(fits, key=lambda f: (f[0], f[1]))
    return size, mask, Status.OPTIMAL if complete else Status.FEASIBLE
