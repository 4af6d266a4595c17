"""Backend registry, in order of preference (cvxpy-style: name -> class)."""

from __future__ import annotations

from ..errors import UnknownBackendError
from .base import Backend
from .brute import BruteBackend
from .cpsat import CpsatBackend
from .gurobi import GurobiBackend
from .mitm import MitmBackend

#: every backend, fastest exact first
BACKENDS: dict[str, type[Backend]] = {
    cls.name: cls for cls in (MitmBackend, CpsatBackend, GurobiBackend, BruteBackend)
}

#: largest m for which `auto` picks mitm. Its time doubles with every 2 coefficients; from
#: benchmarks/results/backends.md (2 cores): min-error mitm beats cpsat by >1000x at m = 28, so it
#: stays ahead to m = 40 (milliseconds a problem); min-size cpsat takes ~3 ms at any m while mitm
#: takes 0.34 ms at m = 28 and doubles every 2, so they cross near m = 34.
AUTO_MITM_MAX_M = {"min-error": 40, "min-size": 32}


def available_backends() -> list[str]:
    """Names of the backends whose packages are installed, in order of preference (plus 'auto')."""
    return [name for name, cls in BACKENDS.items() if cls.is_installed()] + ["auto"]


def get_backend(name: str) -> Backend:
    """Instantiate a backend by name; 'auto' is resolved by :func:`solver.solve`, not here."""
    if not isinstance(name, str) or name not in BACKENDS:
        raise UnknownBackendError(
            f"unknown backend {name!r}; expected one of {list(BACKENDS) + ['auto']} "
            f"(installed here: {available_backends()})"
        )
    backend = BACKENDS[name]()
    backend.check_available()
    return backend


def choose_backend(objective: str, m: int) -> str:
    """`auto`: the fastest exact backend for this objective and problem size."""
    return "mitm" if m <= AUTO_MITM_MAX_M[objective] else "cpsat"


__all__ = ["BACKENDS", "Backend", "available_backends", "choose_backend", "get_backend"]
