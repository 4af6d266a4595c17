"""Test problems defined once, with answers worked out by hand, run against every backend; and the
check that a construction's errors recomputed from its masks are the solver's."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from solver import Status


@dataclass
class KnownProblem:
    name: str
    target: float
    coefficients: list[float]
    objective: str
    eps: float | None = None
    max_size: int | None = None
    # expected answer
    error: float = 0.0
    size: int | None = None
    status: Status = Status.OPTIMAL
    mask: list[bool] | None = None  # when the optimum is unique
    options: dict = field(default_factory=dict)


KNOWN = [
    KnownProblem("exact-pair", 0.5, [0.25, 0.25, 0.7], "min-error", error=0.0, mask=[True, True, False]),
    KnownProblem("negative", -0.3, [0.4, -0.7, 0.9], "min-error", error=0.0, mask=[True, True, False]),
    KnownProblem("single-best", 0.62, [0.1, 0.6, 0.9], "min-error", error=0.02, mask=[False, True, False]),
    # eps = 0.1: {0.7} misses by 0.2, so the fewest ones is the exact pair
    KnownProblem("min-size-pair", 0.5, [0.25, 0.25, 0.7], "min-size", eps=0.1, error=0.0, size=2),
    # eps = 0.25: {0.25} (error 0.25) and {0.7} (error 0.2) both fit: the smaller error wins
    KnownProblem("min-size-tie", 0.5, [0.25, 0.25, 0.7], "min-size", eps=0.25, error=0.2, size=1,
                 mask=[False, False, True]),
    KnownProblem("presolve-empty", 0.005, [0.3, 0.4], "min-size", eps=0.01, error=0.005, size=0,
                 mask=[False, False]),
    # nothing within 0.1 of 5: min-error fallback keeps both
    KnownProblem("infeasible", 5.0, [1.0, 1.0], "min-size", eps=0.1, error=3.0, size=2,
                 status=Status.INFEASIBLE, mask=[True, True]),
    KnownProblem("max-size", 1.0, [0.5, 0.5, 0.3, 0.7], "min-error", max_size=1, error=0.3,
                 mask=[False, False, False, True]),
    KnownProblem("max-size-min-size", 1.0, [0.2, 0.3, 0.5, 0.45, 0.05], "min-size", eps=0.01,
                 max_size=3, error=0.0, size=3),
    KnownProblem("max-size-zero", 0.4, [0.5, 0.3], "min-error", max_size=0, error=0.4, mask=[False, False]),
    KnownProblem("zero-coefficient", 0.3, [0.0, 0.3, 0.0], "min-size", eps=1e-9,
                 error=0.0, size=1, mask=[False, True, False]),
]


def random_instances(rng: np.random.Generator, count: int, m_low: int, m_high: int):
    """Products of two U[-1, 1] coefficients (the construction's), NaN-padded to m_high; targets
    drawn like trained weights (normal, std 0.3, within [-1, 1])."""
    lengths = rng.integers(m_low, m_high + 1, count)
    coeffs = rng.uniform(-1, 1, (count, m_high)) * rng.uniform(-1, 1, (count, m_high))
    coeffs[np.arange(m_high)[None, :] >= lengths[:, None]] = np.nan
    targets = np.clip(rng.normal(0.0, 0.3, count), -1, 1)
    return targets, coeffs, lengths


def assert_errors_from_masks(c) -> None:
    """Every pair's errors recomputed from its masks and random values are the solver's."""
    from models.problems import errors_from_masks

    for layer, spec, sol in zip(c.layers, c.specs, c.solutions):
        we, be = errors_from_masks(layer, spec, sol.masks)
        assert np.allclose(we, sol.weight_error, atol=1e-12) and we.shape == tuple(layer.weight.shape)
        if be is not None:
            assert np.allclose(be, sol.bias_error, atol=1e-12)
