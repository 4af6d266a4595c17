"""Fault injection by backend: tests hand solver.solve a backend that kills its worker once.

No hook lives in production code: ``solver.solve`` accepts a Backend instance, and the instance
travels to the worker processes (loky, dask) like any other.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from solver.backends.cpsat import CpsatBackend


class KillsOneWorker(CpsatBackend):
    """CP-SAT, except that the first chunk solved in a worker process (any process but the one that
    made this object) creates ``marker`` and kills its own process; later chunks solve normally."""

    def __init__(self, marker: Path):
        self.marker = str(marker)
        self.submitter = os.getpid()

    def solve_chunk(self, batch, options):
        if os.getpid() != self.submitter:
            try:
                fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass
            else:
                os.close(fd)
                os.kill(os.getpid(), signal.SIGKILL)
        return super().solve_chunk(batch, options)
