"""The one checking helper for scalar parameters, in the style of scikit-learn's ``check_scalar``.

Every message follows one template: which parameter, what is allowed, what was got, e.g.
"`workers` must be an int in the range [1, inf); got 0 instead". A wrong type raises
:class:`~solver.errors.SolverTypeError` (a ``TypeError``), a wrong value
:class:`~solver.errors.SolverInputError` (a ``ValueError``); both are :class:`SolverError`.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from .errors import SolverInputError, SolverTypeError

_KINDS = {int: (numbers.Integral, "an int"), float: (numbers.Real, "a real number")}


def check_scalar(value: Any, name: str, kind: type, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> int | float:
    """Check that ``value`` is a finite ``kind`` (``int`` or ``float``) inside the range, and return it
    as that Python type. ``low``/``high`` None: unbounded; ``*_open``: the end itself is excluded.

    Raises SolverTypeError (wrong type, bools included) or SolverInputError (out of range, NaN, inf).
    """
    abstract, what = _KINDS[kind]
    lo = "(" if low is None or low_open else "["
    hi = ")" if high is None or high_open else "]"
    interval = f"{lo}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi}"
    if isinstance(value, bool) or not isinstance(value, abstract):
        raise SolverTypeError(f"`{name}` must be {what} in the range {interval}; got {value!r} "
                              f"({type(value).__name__}) instead")
    out = kind(value)
    bad = not math.isfinite(out)
    if low is not None:
        bad |= out < low or (low_open and out == low)
    if high is not None:
        bad |= out > high or (high_open and out == high)
    if bad:
        raise SolverInputError(f"`{name}` must be {what} in the range {interval}; got {value!r} instead")
    return out


def check_choice(value: Any, name: str, choices: tuple) -> Any:
    """Check that ``value`` is one of ``choices``; return it."""
    if value not in choices:
        raise SolverInputError(f"`{name}` must be one of {list(choices)}; got {value!r} instead")
    return value
