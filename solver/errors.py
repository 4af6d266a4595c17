"""Exceptions raised by the solver package.

Each message says what was received and what is expected; the classes also derive from the
matching builtin (ValueError, ImportError, MemoryError) so generic handlers keep working.
"""


class LotteryError(Exception):
    """The base of every error the tool raises for its user: input it cannot take or a run it cannot
    do, said in one line (what was received, what is expected). The CLI prints these as they are;
    any other exception is a bug of the tool."""


class SolverError(LotteryError):
    """Base class of every error raised by :mod:`solver`."""


class SolverInputError(SolverError, ValueError):
    """A target, coefficient or option has a wrong shape or value."""


class SolverTypeError(SolverInputError, TypeError):
    """An option has the wrong type (e.g. a float where an int is expected)."""


class UnknownBackendError(SolverError, ValueError):
    """The backend name is not one of the registered backends."""


class BackendUnavailableError(SolverError, ImportError):
    """The backend's optional package is not installed (the message names the extra)."""


class LicenseError(SolverError):
    """The solver is installed but its licence refuses the model (e.g. Gurobi's size limit)."""


class BackendCapabilityError(SolverError, ValueError):
    """The backend cannot solve this objective / option combination exactly."""


class ProblemTooLargeError(SolverError, MemoryError):
    """The problems are too large for this backend (e.g. mitm memory); says what to use instead."""
