"""Local certificates: what the ticket computes near the data.

The certified bound over the whole input box holds for every image and every noise pattern, and a
deep network's own activations over that box are astronomically wide, so any sound bound over it
is too. Here, for verified inputs x, the certified sup of |f - g| is taken over the l_inf ball of
radius r around x, clipped to the domain, by the linear relaxation (:func:`models.crown.crown_regions`;
on a ball few ReLUs are unstable, and only those cost), on the inputs with the largest errors first,
as many as fit the time given (the count is reported); a target the relaxation does not handle
gets interval propagation (:func:`models.bounds.interval_bounds`) over every ball. Beside it, a
projected gradient search inside the same balls from each x (:func:`models.adversarial.ascend`)
gives a proven lower bound per ball, so bound / found says how loose each local certificate can be
at most. Certified agreement: the argmax of target and ticket is proved the same over the whole
ball where the target's margin (its relaxation's upper bound of f_j - f_top over the ball) beats the
two outputs' error bounds. Token inputs have no ball (ids are discrete): they get none, with the reason.

For images in [0, 1], r = 1/255 is one step of 8-bit pixels. Local certificates are computed only
when a radius is given (``--radius``): on the digits LeNet-5 the relaxation costs about 0.1 s per
ball on 2 CPU cores, so a verification of 540 inputs takes a minute more, not yet a default.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn as nn

from .adversarial import ascend
from .bounds import interval_bounds
from .crown import crown_regions
from .errors import UsageError
from .network import PrunedNetwork
from .rules import Bound, NoBoundRule

#: gradient steps of the search inside each ball
BALL_STEPS = 10


def check_radius(radius: float | None) -> None:
    """A radius is a number >= 0 (None: no local certificates)."""
    if radius is not None and not (isinstance(radius, (int, float)) and radius >= 0):
        raise UsageError(f"the radius of local certificates must be a number >= 0; got {radius}")


def recorded_radius(report: dict[str, Any]) -> float | None:
    """The radius a run's report records for its local certificates (None: none)."""
    return (report.get("local_certificates") or {}).get("radius")


@dataclass
class LocalCertificates:
    """Per certified input (in the order given: largest errors first) the certified bound over its
    ball, the largest error a search inside it found, and whether the argmax is proved the same for
    target and ticket over the whole ball; ``inputs`` of the ``measured`` inputs are certified (the
    linear relaxation's cost: as many as fit the time given, the largest errors first)."""

    radius: float
    measured: int
    bound: list[float]  # per input: the certified sup of |f - g| over its ball (max over outputs)
    found: list[float]  # per input: the largest |f - g| found inside its ball (a lower bound)
    agreed: list[bool] | None  # per input: argmax f = argmax g proved on the whole ball (None: one output)
    method: str
    seconds: float

    @property
    def inputs(self) -> int:
        return len(self.bound)

    @property
    def holds(self) -> bool:
        """Every ball's bound is at least the error found inside it (a failure is a bug)."""
        return all(f <= b for f, b in zip(self.found, self.bound))

    @property
    def agreement(self) -> float | None:
        """The fraction of the certified inputs whose argmax is proved the same over the ball."""
        return None if self.agreed is None else sum(self.agreed) / len(self.agreed)

    def to_json(self) -> dict[str, Any]:
        ratio = [b / f for b, f in zip(self.bound, self.found) if f > 0]
        return {"radius": self.radius, "inputs": self.inputs, "measured": self.measured,
                "max_bound": max(self.bound), "median_bound": statistics.median(self.bound),
                "max_found": max(self.found), "median_found": statistics.median(self.found),
                "median_ratio": statistics.median(ratio) if ratio else None, "max_ratio": max(ratio) if ratio else None,
                "ratio_of_maxima": max(self.bound) / max(self.found) if max(self.found) > 0 else None,
                "certified_agreement": self.agreement, "holds": self.holds, "method": self.method,
                "seconds": self.seconds, "bound": self.bound, "found": self.found, "agreed": self.agreed}


#: the per-input lists of :meth:`LocalCertificates.to_json`, left out of a summary
PER_INPUT = ("bound", "found", "agreed")


def summary(local: dict[str, Any] | None) -> dict[str, Any] | None:
    """The local certificates' JSON (or why there are none) without the per-input lists."""
    return None if local is None else {k: v for k, v in local.items() if k not in PER_INPUT}


def _agreed(margin: torch.Tensor, per_output: torch.Tensor, top: torch.Tensor) -> list[bool] | None:
    """Per ball: g_j - g_top <= (f_j - f_top) + b_j + b_top < 0 for every j != top, with ``margin`` the
    upper bounds of f_j - f_top over the ball and ``per_output`` the bounds b of |g - f|."""
    if per_output.shape[1] < 2:
        return None
    worst = margin + per_output + per_output.gather(1, top[:, None])
    worst.scatter_(1, top[:, None], -math.inf)
    return (worst.amax(dim=1) < 0).tolist()


def local_certificates(c: PrunedNetwork, x: torch.Tensor, radius: float, collapsed: nn.Module,
                       errors: list[Callable[[], tuple]], kept: Callable[[], list], seconds: float,
                       batch: int, whole: float | None) -> LocalCertificates | str:
    """The local certificates of the inputs ``x`` (largest errors first) at ``radius``: the linear
    relaxation on as many balls as fit about ``seconds`` (at least one), else (a target that is not a
    chain) interval propagation on all; none above the whole domain's bound ``whole`` (each ball lies
    in the domain). Or the reason there are none."""
    if c.domain.tokens:
        return "token inputs have no ball (ids are discrete)"
    start = time.perf_counter()
    balls = c.domain.balls(x, radius)
    with torch.no_grad():
        top = c.folded(x.double()).reshape(len(x), -1).argmax(dim=1)
    tight = crown_regions(c.folded, c.layers, kept, balls, start + seconds, top)
    count = len(x) if tight is None else len(tight[0])
    part = balls.part(0, count)
    try:
        out, slack = _interval_balls(c, errors, part, batch)
    except NoBoundRule as exc:
        return f"no bound rule for {str(exc).splitlines()[0]}"
    if tight is not None:
        per_output, margin = torch.minimum(out.delta, tight[0]) + slack, tight[1]
        method = (f"linear relaxation over each ball (models/crown.py), on the {count} of the {len(x)} inputs "
                  "with the largest errors that fit the time given")
    else:
        per_output = out.delta + slack
        margin = out.hi - out.lo.gather(1, top[:, None])  # f_j - f_top <= hi_j - lo_top
        method = "interval bound propagation over each ball (models/bounds.py)"
    if whole is not None:
        per_output = per_output.clamp(max=whole)
    _, err = ascend(c, c.folded, collapsed, x[:count].double(), part.lo, part.hi, BALL_STEPS, batch)
    found = torch.maximum(err[:count], err[count:])
    return LocalCertificates(radius=radius, measured=len(x), bound=per_output.amax(dim=1).tolist(), found=found.tolist(),
                             agreed=_agreed(margin, per_output, top[:count]), method=method,
                             seconds=time.perf_counter() - start)


def _interval_balls(c: PrunedNetwork, errors: list[Callable[[], tuple]], balls, batch: int):
    """Interval propagation over every ball, ``batch`` balls at a time: (Bound of outputs, slack), flattened."""
    lo, hi, delta, slacks = [], [], [], []
    for i in range(0, len(balls), batch):
        out, slack = interval_bounds(c.folded, c.layers, errors, balls.part(i, i + batch))
        parts = torch.broadcast_tensors(out.lo, out.hi, out.delta, slack)
        n = len(parts[0])
        for kept_part, t in zip((lo, hi, delta, slacks), parts):
            kept_part.append(t.reshape(n, -1))
    return Bound(torch.cat(lo), torch.cat(hi), torch.cat(delta)), torch.cat(slacks)
