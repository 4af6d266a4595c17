"""Shared fixtures: the installed backends, and skips that say why."""

from __future__ import annotations

import pytest

from solver.backends.gurobi import license_problem

_GUROBI_PROBLEM = license_problem()

# every backend configuration the shared problems run against; brute is the reference
BACKEND_CONFIGS = {
    "mitm": dict(backend="mitm"),
    "mitm-torch": dict(backend="mitm", engine="torch"),
    "cpsat": dict(backend="cpsat"),
    "gurobi": dict(backend="gurobi"),
    "brute": dict(backend="brute"),
}


def _marks(name: str):
    if name == "gurobi" and _GUROBI_PROBLEM:
        return [pytest.mark.skip(reason=f"gurobi unusable here: {_GUROBI_PROBLEM}")]
    return []


@pytest.fixture(params=[pytest.param(k, marks=_marks(k)) for k in BACKEND_CONFIGS])
def backend_config(request) -> dict:
    """Keyword arguments selecting one backend configuration (skips gurobi when unusable)."""
    return dict(BACKEND_CONFIGS[request.param])


requires_gurobi = pytest.mark.skipif(_GUROBI_PROBLEM is not None, reason=f"gurobi unusable here: {_GUROBI_PROBLEM}")
