"""Settings of one solve: a validated dataclass, the single source of truth for the options.

Each field is declared once with :func:`option`: its default, a one-line doc, its type and
allowed range, whether it changes what is computed (``hashed``) and its command-line flag.
From that declaration derive:

* the keyword arguments of :func:`solver.solve` (its signature lists exactly these fields);
* validation (:meth:`SolveOptions.__post_init__`, through :func:`solver.validation.check_scalar`);
* the job store's configuration hash (:func:`hashed_fields`: fields such as ``workers`` that
  cannot change the result or the chunk layout are left out, so a run resumes on another machine);
* the ``lottery solve`` flags (``models.commands`` reads ``cli``, ``doc`` and the checks).
"""

from __future__ import annotations

import os
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any

from .errors import SolverInputError, SolverTypeError
from .validation import check_choice, check_scalar

OBJECTIVES = ("min-error", "min-size")
EXECUTORS = ("local", "dask")
ENGINES = (None, "numba", "torch")
DEFAULT_MEMORY_LIMIT = 2 * 1024**3


def option(default: Any = MISSING, doc: str = "", *, kind: type | None = None, low: float | None = None,
           low_open: bool = False, choices: tuple | None = None, hashed: bool = True, cli: str | None = None,
           cli_default: Any = MISSING, cli_help: str | None = None, words: tuple[str, ...] = (),
           default_factory: Any = MISSING) -> Any:
    """A dataclass field with its documentation and checks in the metadata.

    ``kind``: int, float, bool or str (None: not checked here); ``low``/``low_open``: the range of a
    number; ``choices``: the allowed values; ``hashed``: False when the value cannot change the
    result (nor how it is cut into stored chunks); ``cli``: the command-line flag, if any, and
    ``cli_default`` its default when it differs from the API's, ``cli_help`` its help when the
    command line gives the option a wider meaning; ``words``: strings accepted besides a number
    of ``kind`` (e.g. ``("auto",)``).
    """
    meta = dict(doc=doc, kind=kind, low=low, low_open=low_open, choices=choices, hashed=hashed, cli=cli,
                cli_default=cli_default, cli_help=cli_help, words=words)
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def check_field(f, value: Any, name: str | None = None) -> Any:
    """Validate one value against its field's declaration; returns it normalised."""
    meta, name = f.metadata, name or f.name
    if value is None and f.default is None:
        return None
    words = meta.get("words", ())
    if isinstance(value, str) and words:
        if value in words:
            return value
        kind_name = {int: "an int", float: "a number"}.get(meta.get("kind"), "a value")
        raise SolverInputError(f"`{name}` must be {kind_name} or one of {list(words)}; got {value!r} instead")
    if meta.get("choices") is not None:
        return check_choice(value, name, meta["choices"])
    kind = meta.get("kind")
    if kind in (int, float):
        return check_scalar(value, name, kind, low=meta["low"], low_open=meta["low_open"])
    if kind is bool and not isinstance(value, bool):
        raise SolverTypeError(f"`{name}` must be True or False; got {value!r} instead")
    if kind is str and not isinstance(value, str):
        raise SolverTypeError(f"`{name}` must be a string; got {value!r} instead")
    return value


def validate(obj: Any) -> None:
    """Check every declared field of a (frozen) dataclass instance, writing back normalised values."""
    for f in fields(obj):
        object.__setattr__(obj, f.name, check_field(f, getattr(obj, f.name)))


def hashed_fields(obj: Any) -> dict[str, Any]:
    """The fields that determine the result (and the chunk layout), for configuration hashes."""
    return {f.name: getattr(obj, f.name) for f in fields(obj) if f.metadata.get("hashed", True)}


def available_cores() -> int:
    """CPU cores this process may run on (respects affinity masks and cgroup pinning)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class SolveOptions:
    """Settings of one :func:`solver.solve` call, validated on construction."""

    objective: str = option("min-error", "min-error: closest subset; min-size: fewest kept coefficients within eps, "
                            "then the smallest error", choices=OBJECTIVES, cli="--objective")
    eps: float | None = option(None, "largest allowed |error| of a min-size subset (required for min-size; with "
                               "min-error, the threshold the report counts weights within)",
                               kind=float, low=0.0, cli="--eps")
    max_size: int | None = option(None, "at most this many ones per subset (fixed-size subset sum)", kind=int, low=0)
    time_limit: float | None = option(None, "seconds per problem for cpsat/gurobi; a stopped search is 'feasible'",
                                      kind=float, low=0.0, low_open=True, cli="--time-limit")
    resolution: float | None = option(None, "cpsat integer grid (absolute); default from eps (min-size) or 1e-7 "
                                      "relative (min-error)", kind=float, low=0.0, low_open=True, cli="--resolution")
    device: str = option("cpu", "mitm device: cpu | cuda[:i]", kind=str, cli="--device")
    engine: str | None = option(None, "mitm engine on the CPU: numba (default) or torch", choices=ENGINES)
    presolve: bool = option(True, "exact presolve (min-size subsets of at most 2 ones enumerated before the backend)",
                            kind=bool, cli="--no-presolve")
    workers: int | None = option(None, "CPU cores: worker processes (cpsat, gurobi, brute) or threads (mitm); "
                                 "None = every core this process may run on", kind=int, low=1, hashed=False,
                                 cli="--workers")
    chunk_size: int | None = option(None, "problems per unit of parallel work (default per backend); results do "
                                    "not depend on it", kind=int, low=1, cli="--chunk-size")
    memory_limit: int = option(DEFAULT_MEMORY_LIMIT, "bytes mitm may use for its sum tables at once (on CUDA: GPU "
                               "memory); chunks are sized to it, results do not depend on it", kind=int, low=1,
                               cli="--table-memory")
    progress: bool | None = option(None, "progress bar; None: only on a terminal for multi-chunk batches", kind=bool,
                                   hashed=False)
    executor: str = option("local", "local worker processes, or a dask.distributed cluster (scheduler)",
                           choices=EXECUTORS, hashed=False, cli="--executor")
    scheduler: str | None = option(None, "dask scheduler address, e.g. tcp://10.0.0.5:8786", kind=str, hashed=False,
                                   cli="--scheduler")

    def __post_init__(self) -> None:
        if self.workers is None:
            object.__setattr__(self, "workers", available_cores())
        validate(self)
        if self.objective == "min-size" and self.eps is None:
            raise SolverInputError("`eps` is required for objective 'min-size' (the largest allowed |error|); got None")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise SolverInputError(f"`device` must be 'cpu' or 'cuda[:index]'; got {self.device!r} instead")
        if self.executor == "dask" and not self.scheduler:
            raise SolverInputError("`executor='dask'` needs `scheduler`, the address of a dask.distributed scheduler")

    def with_(self, **changes: Any) -> "SolveOptions":
        """A validated copy with some fields changed."""
        return replace(self, **changes)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "SolveOptions":
        """Options from keyword arguments; an unknown keyword is an error naming the valid ones."""
        unknown = sorted(set(kwargs) - set(cls.names()))
        if unknown:
            raise SolverInputError(f"unknown option(s) {unknown}; the options of solver.solve are {cls.names()}")
        return cls(**kwargs)
