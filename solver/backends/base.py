"""The small interface every backend implements."""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from ..errors import BackendCapabilityError, BackendUnavailableError, SolverError
from ..options import OBJECTIVES, SolveOptions
from ..problem import ProblemBatch
from ..result import ChunkSolution, Status


class Backend(ABC):
    """A way of solving a chunk of subset-sum problems.

    Capabilities are class attributes (as in cvxpy's solver classes) so :func:`solver.solve`
    can refuse an unsupported request before any work starts. ``solve_chunk`` must be a pure
    function of its arguments: it runs unchanged in this process, a worker process or a
    cluster worker, and the same chunk always gives the same answer (no time limit).
    """

    name: ClassVar[str]
    objectives: ClassVar[tuple[str, ...]] = OBJECTIVES
    supports_max_size: ClassVar[bool] = True
    supports_time_limit: ClassVar[bool] = False
    required_modules: ClassVar[tuple[str, ...]] = ()
    install_hint: ClassVar[str] = ""
    #: "process": parallel over worker processes; "in-process": the backend parallelises
    #: itself (threads or a GPU) and receives ``options.workers``.
    parallelism: ClassVar[str] = "process"
    default_chunk_size: ClassVar[int] = 256
    #: the solver's native statuses -> :class:`Status` (cvxpy's STATUS_MAP); an unlisted one is an error
    STATUS_MAP: ClassVar[dict[Any, Status]] = {}

    def map_status(self, native: Any, name: str | None = None) -> Status:
        """The common status of a native one; an unknown native status raises, naming it."""
        try:
            return self.STATUS_MAP[native]
        except KeyError:
            raise SolverError(f"backend {self.name!r} ended with native status {name or native!r}, which it does "
                              f"not know how to report (known: {list(self.STATUS_MAP)})") from None

    @classmethod
    def is_installed(cls) -> bool:
        """True when every module the backend needs can be imported (not whether it is licensed)."""
        return all(importlib.util.find_spec(mod) is not None for mod in cls.required_modules)

    def check_available(self) -> None:
        if not self.is_installed():
            missing = [m for m in self.required_modules if importlib.util.find_spec(m) is None]
            raise BackendUnavailableError(
                f"backend {self.name!r} requires {', '.join(missing)}, which is not installed. "
                f"{self.install_hint}"
            )

    def check(self, batch: ProblemBatch, options: SolveOptions) -> None:
        """Refuse, before solving, what this backend cannot do exactly. Override to add checks."""
        if options.objective not in self.objectives:
            raise BackendCapabilityError(
                f"backend {self.name!r} does not support objective {options.objective!r}; "
                f"it supports {list(self.objectives)}"
            )
        if options.max_size is not None and not self.supports_max_size:
            raise BackendCapabilityError(f"backend {self.name!r} does not support `max_size`")
        if options.time_limit is not None and not self.supports_time_limit:
            raise BackendCapabilityError(
                f"backend {self.name!r} is exact and has no time limit; got time_limit="
                f"{options.time_limit}. Use 'cpsat' or 'gurobi' for time-limited solves."
            )

    def prepare(self, batch: ProblemBatch, options: SolveOptions) -> SolveOptions:
        """Fill backend-specific defaults into the options (e.g. the CP-SAT resolution)."""
        return options

    def certificate(self, options: SolveOptions) -> dict[str, Any]:
        """What makes this backend's answers exact (recorded in ``SolveResult.info``)."""
        return {}

    @abstractmethod
    def solve_chunk(self, batch: ProblemBatch, options: SolveOptions) -> ChunkSolution:
        """Solve every problem of ``batch``; return masks, statuses, bounds and tolerances."""
