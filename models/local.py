"""Local certificates: what the ticket computes near the data.

The certified bound over the whole input box holds for every image and every noise pattern, and a
deep network's own activations over that box are astronomically wide, so any sound bound over it
is too. Here, for each verified input x, the certified sup of |f - g| is taken over the l_inf ball of
radius r around x, clipped to the domain: interval propagation over every ball at once
(:func:`models.bounds.interval_bounds`), tightened per ball by the linear relaxation
(:func:`models.crown.crown_regions`, on the balls of the inputs with the largest errors first, as
many as fit the time planned; on a ball few ReLUs are unstable, and only those cost). Beside it, a
projected gradient search inside the same balls from each x (:func:`models.adversarial.ascend`)
gives a proven lower bound per ball, so bound / found says how loose each local certificate can be
at most. Token inputs have no ball (ids are discrete): they get none, with the reason.

For images in [0, 1], r = 1/255 is one step of 8-bit pixels. Local certificates are computed only
when a radius is given (``--radius``): over the digits LeNet-5 (540 inputs) they add about 50 s to a
7.5 s verification today, and the interval bounds of a ball are looser than the linear relaxation
over the whole box, so they are not yet a default.
"""

from __future__ import annotations

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
from .rules import NoBoundRule

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
    """Per input (in the order given: largest errors first) the certified bound over its ball and
    the largest error a search inside it found; ``tightened`` of them have the linear relaxation's
    bound, the others interval propagation's."""

    radius: float
    bound: list[float]  # per input: the certified sup of |f - g| over its ball (max over outputs)
    found: list[float]  # per input: the largest |f - g| found inside its ball (a lower bound)
    tightened: int
    method: str
    seconds: float

    @property
    def holds(self) -> bool:
        """Every ball's bound is at least the error found inside it (a failure is a bug)."""
        return all(f <= b for f, b in zip(self.found, self.bound))

    def to_json(self) -> dict[str, Any]:
        ratio = [b / f for b, f in zip(self.bound, self.found) if f > 0]
        return {"radius": self.radius, "inputs": len(self.bound), "tightened": self.tightened,
                "max_bound": max(self.bound), "median_bound": statistics.median(self.bound),
                "max_found": max(self.found), "median_ratio": statistics.median(ratio) if ratio else None,
                "max_ratio": max(ratio) if ratio else None, "holds": self.holds, "method": self.method, "seconds": self.seconds,
                "bound": self.bound, "found": self.found}


def local_certificates(c: PrunedNetwork, x: torch.Tensor, radius: float, collapsed: nn.Module,
                       errors: list[Callable[[], tuple]], kept: Callable[[], list], seconds: float,
                       batch: int, whole: float | None) -> LocalCertificates | str:
    """The local certificates of the inputs ``x`` (largest errors first) at ``radius``, planned to
    take about ``seconds`` beyond the interval bounds, none above the whole domain's bound ``whole``
    (each ball lies in the domain); or the reason there are none."""
    if c.domain.tokens:
        return "token inputs have no ball (ids are discrete)"
    start = time.perf_counter()
    balls = c.domain.balls(x, radius)
    deltas, slacks = [], []
    try:
        for i in range(0, len(balls), batch):
            out, slack = interval_bounds(c.folded, c.layers, errors, balls.part(i, i + batch))
            deltas.append(out.delta.reshape(len(out.delta), -1))
            slacks.append(slack.reshape(len(slack), -1))
    except NoBoundRule as exc:
        return f"no bound rule for {str(exc).splitlines()[0]}"
    slack = torch.cat(slacks)
    per_output = torch.cat(deltas) + slack
    tight = crown_regions(c.folded, c.layers, kept, balls, start + seconds / 2) or []
    for i, t in enumerate(tight):
        per_output[i] = torch.minimum(per_output[i], t + slack[i])
    method = "interval bound propagation over each ball" + (
        f", tightened by the linear relaxation on the first {len(tight)}" if tight else "")
    if whole is not None:
        per_output = per_output.clamp(max=whole)
    _, err = ascend(c, c.folded, collapsed, x.double(), balls.lo, balls.hi, BALL_STEPS, batch)
    found = torch.maximum(err[:len(x)], err[len(x):])
    return LocalCertificates(radius=radius, bound=per_output.amax(dim=1).tolist(), found=found.tolist(),
                             tightened=len(tight), method=method, seconds=time.perf_counter() - start)
