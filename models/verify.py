"""Verification: the pruned network against the target, with the certified bound.

The pruned network is evaluated in two forms (:mod:`models.collapsed`): the collapsed form (each
pair as the target-shaped layer of its kept sums: what the pruned pair computes, at the target's
cost) and the materialised one (random values times masks, 21-42 times wider). The observed errors
|f(x) - g(x)|, accuracy and agreement are measured on the collapsed form in float64 on the data (or
on samples of the input box); the adversarial search and the certified bound (:mod:`models.bounds`,
:mod:`models.crown`) use it too. The certified bound covers every input in the box, so it must
never be below an observed error (``bound_holds``; a failure is a bug).

The materialised network still runs, so that "the pruned random network computes this" is checked
on the real network: in float32 on every input that fits its time (all for small networks, else the
inputs with the largest errors first; at least :data:`MIN_MATERIALISED_INPUTS`), and in float64 on
one to :data:`MATERIALISED_FLOAT64_INPUTS` of them. The largest differences from the
collapsed form are reported and must be float rounding (:data:`models.collapsed.FLOAT32_AGREEMENT`,
``FLOAT64_AGREEMENT``): anything more raises :class:`models.collapsed.FormMismatchError`, a bug.

Large inputs are planned by time: one float64 forward of the target and the collapsed form is timed,
and when the inputs would take more than :data:`FLOAT64_SECONDS`, accuracy and agreement are measured
in float32 (target and collapsed form) on every input and the errors in float64 on the half of as
many as fit (at least :data:`MIN_FLOAT64_INPUTS`) with the largest float32 errors plus as many at
random (seeded); the report says so. The mean error is the float64 mean over the random part.

Verification costs less than solving: the errors on every input, the collapse and the certified
bound come first; then the materialised network and the adversarial search share what is left of
:data:`VERIFY_SHARE` of the construction's solve time (each at least :data:`MIN_PLANNED_SECONDS`, at
most :data:`MATERIALISED_SECONDS` and :data:`ADVERSARIAL_SECONDS`; the search takes fewer steps, then
fewer starts; both reported). A rebuilt ticket, with no solve time, gets those most.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn

from .adversarial import adversarial_search
from .bounds import CertifiedBound, certified_bound
from .collapsed import FLOAT32_AGREEMENT, FLOAT64_AGREEMENT, FormMismatchError, collapse, in_float32
from .crown import tighten
from .data import Dataset
from .local import LocalCertificates, check_radius, local_certificates
from .domain import InputDomain
from .memory import MAX_VERIFY_BATCH
from .network import PrunedNetwork
from .pruned import fixed_masks

#: inputs stored in a ticket with the pruned network's outputs, for the bit-exact rebuild check
CHECK_INPUTS = 32
#: time planned for the float64 forwards (target and collapsed form), the fewest float64 inputs,
#: and the adversarial search's time
FLOAT64_SECONDS = 60.0
MIN_FLOAT64_INPUTS = 8
ADVERSARIAL_SECONDS = 60.0
#: the most time for the materialised network, the fewest inputs it runs on in float32, and the most
#: it also runs in float64 (at least one)
MATERIALISED_SECONDS = 10.0
MIN_MATERIALISED_INPUTS = 8
MATERIALISED_FLOAT64_INPUTS = 8
#: the time for the local certificates' linear relaxation, asked for with a radius (not a share of the solve
#: time: at least one ball, the largest errors first, as many as fit; about 0.1 s per ball on LeNet-5, 2 cores)
LOCAL_SECONDS = 30.0
#: verification plans its optional work (the materialised network beyond its fewest inputs, the
#: adversarial search) to end within this share of the construction's solve time, each part getting
#: at least MIN_PLANNED_SECONDS; a rebuilt ticket (no solve time) gets MATERIALISED_SECONDS and
#: ADVERSARIAL_SECONDS
VERIFY_SHARE = 0.5
MIN_PLANNED_SECONDS = 0.5


def _batched(model: nn.Module, x: torch.Tensor, batch: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """model(x) in ``dtype``, ``batch`` inputs at a time (the inputs are cast per batch)."""
    def cast(t: torch.Tensor) -> torch.Tensor:
        return t.to(dtype) if t.is_floating_point() else t  # token ids stay ids

    with torch.no_grad(), fixed_masks(model):
        return torch.cat([model(cast(x[i:i + batch])) for i in range(0, len(x), batch)])


def _seconds_per_input(models: list[nn.Module], x: torch.Tensor, dtype: torch.dtype) -> float:
    """Seconds of one forward of every model on one input in ``dtype`` (the second of two calls)."""
    for _ in range(2):
        start = time.perf_counter()
        for model in models:
            _batched(model, x[:1], 1, dtype)
        seconds = time.perf_counter() - start
    return seconds


def _float64_subset(f32: torch.Tensor, g32: torch.Tensor, seed: int, count: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs measured in float64, the random ones among them): the ``count`` / 2 with the
    largest float32 errors and as many others drawn at random."""
    n = len(f32)
    err32 = (f32 - g32).abs().reshape(n, -1).amax(dim=1)
    top = err32.argsort(descending=True)[: count // 2]
    rest = torch.ones(n, dtype=torch.bool)
    rest[top] = False
    others = torch.nonzero(rest).flatten()
    gen = torch.Generator().manual_seed(seed)
    random = others[torch.randperm(len(others), generator=gen)[: count - len(top)]]
    return torch.cat([top, random]), random


def kept(c: PrunedNetwork) -> list[tuple[list[torch.Tensor], torch.Tensor | None]]:
    """Per pair the kept sums and the kept bias (float64), formed from the masks and the regenerated
    values as the layer was solved or its ticket rebuilt (:func:`models.problems.block_sums`)."""
    return [(s.sums, s.bias_sum) for s in c.solutions]


def _errors_of(solution) -> Callable[[], tuple]:
    """A function returning a pair's (weight_error, bias_error), formed from its kept sums when called."""
    return lambda: (solution.weight_error, solution.bias_error)


def errors(c: PrunedNetwork) -> list[Callable[[], tuple]]:
    """Per pair a function returning its (weight_error, bias_error), as interval propagation takes them."""
    return [_errors_of(s) for s in c.solutions]


def certified(c: PrunedNetwork) -> CertifiedBound:
    """The certified bound over the construction's input box: interval propagation with the weight
    errors, tightened per output by the linear relaxation where that applies (:mod:`models.crown`)."""
    box = c.domain.box(c.input_shape)
    interval = certified_bound(c.folded, c.layers, errors(c), box)
    return tighten(interval, c.folded, c.layers, lambda: kept(c), box)


def _as_many_as_fit(model: nn.Module, x: torch.Tensor, first: int, most: int, seconds: float, batch: int,
                    dtype: torch.dtype) -> tuple[torch.Tensor, int]:
    """(model's outputs, how many): on ``x[:first]`` (timed), then on as many more as fit the rest of
    ``seconds`` at that pace, at most ``most`` in all."""
    start = time.perf_counter()
    out = [_batched(model, x[:first], batch, dtype)]
    per_input = (time.perf_counter() - start) / first
    left = seconds - (time.perf_counter() - start)
    count = min(len(x), most, first + max(0, int(left / max(per_input, 1e-9))))
    if count > first:
        out.append(_batched(model, x[first:count], batch, dtype))
    return torch.cat(out), count


def materialised_check(c: PrunedNetwork, x: torch.Tensor, g64: torch.Tensor, batch: int,
                       seconds: float) -> dict[str, Any]:
    """The materialised pruned network on the inputs ``x`` (the collapsed form's float64 outputs
    ``g64`` on them, largest errors first) within about ``seconds``: float32 on the first
    :data:`MIN_MATERIALISED_INPUTS` (timed) and as many more as fit 70% of the time, float64 on one and
    as many more (up to :data:`MATERIALISED_FLOAT64_INPUTS`) as fit the rest. Raises
    :class:`FormMismatchError` when a difference exceeds float rounding."""
    start = time.perf_counter()
    scale = 1.0 + float(g64.abs().max())
    g32, count = _as_many_as_fit(c.pruned, x, min(len(x), MIN_MATERIALISED_INPUTS), len(x), 0.7 * seconds, batch,
                                 torch.float32)
    diff32 = float((g32.double() - g64[:count]).abs().max())
    g, count64 = _as_many_as_fit(c.pruned, x, 1, MATERIALISED_FLOAT64_INPUTS,
                                 seconds - (time.perf_counter() - start), batch, torch.float64)
    diff64 = float((g - g64[:count64]).abs().max())
    out = {"float32_inputs": count, "float32_difference": diff32, "float64_inputs": count64,
           "float64_difference": diff64, "relative_to": scale,
           "tolerance": {"float32": FLOAT32_AGREEMENT * scale, "float64": FLOAT64_AGREEMENT * scale}}
    for dtype, diff in (("float32", diff32), ("float64", diff64)):
        if not diff <= out["tolerance"][dtype]:
            raise FormMismatchError(
                f"the materialised pruned network differs from its collapsed form by {diff:.3g} in {dtype} (on "
                f"{count if dtype == 'float32' else count64} inputs), above float rounding ({out['tolerance'][dtype]:.3g}): "
                f"a bug in the masks, the regenerated random values or the kept sums; please report it")
    return out


@dataclass
class Verification:
    """What :func:`verify` measured. Errors are |f(x) - g(x)| in float64 (``max_output_error``,
    ``mean_output_error``) on ``float64_inputs`` of the ``count`` inputs (``measured_on`` says which
    when not all); ``certificate`` bounds them over the whole domain and must be >= every error seen
    (``bound_holds``; None without a bound). With an adversarial search, ``adversarial_output_error``
    is the largest error it found (a lower bound on the sup) at ``witness``. For classifiers:
    ``agreement`` of the argmaxes, ``near_ties`` (inputs whose target top-2 margin is at most twice the
    largest error: the only ones whose argmax the errors allow to differ) and, with labelled data,
    ``accuracy``. ``materialised``: the materialised network's differences from the collapsed form;
    ``forms``: which form gave each figure."""

    inputs: str  # the data's name, or how many domain samples
    measured_on: str | None  # None: the errors are over every input
    count: int
    float64_inputs: int
    max_output_error: float
    mean_output_error: float
    certificate: CertifiedBound
    materialised: dict[str, Any]
    forms: dict[str, str]
    bound_holds: bool | None
    output_range_observed: list[float]
    seconds: float
    phase_seconds: dict[str, float]  # collapse, float32, float64, certified_bound, materialised, local, adversarial
    adversarial_output_error: float | None = None
    witness: torch.Tensor | None = field(default=None, repr=False)
    adversarial: dict[str, Any] | None = None  # the search's settings: starts, steps, seed, seconds
    accuracy: dict[str, float] | None = None  # {"target": ..., "pruned": ...}
    agreement: float | None = None
    near_ties: int | None = None
    local: LocalCertificates | None = None  # the certificates over a ball around each input
    local_reason: str | None = None  # why there are none, when there are none

    @property
    def certified_bound(self) -> float | None:
        return self.certificate.bound

    @property
    def interval_bound(self) -> float | None:
        return self.certificate.interval_bound

    @property
    def bound_method(self) -> str:
        return self.certificate.method

    @property
    def vacuous(self) -> bool | None:
        """Whether the whole domain's bound says nothing: it exceeds the spread of the target's own
        outputs observed on the inputs (max - min), which the true spread over the domain is at least
        (None: no bound)."""
        if self.certified_bound is None:
            return None
        low, high = self.output_range_observed
        return self.certified_bound > high - low

    @property
    def certified_bound_reason(self) -> str | None:
        """Why there is no certified bound, when there is none."""
        return self.certificate.reason

    def local_json(self) -> dict[str, Any] | None:
        """The local certificates as JSON, or why there are none (None: no radius was given)."""
        if self.local is not None:
            return self.local.to_json()
        return None if self.local_reason is None else {"reason": self.local_reason}

    def to_json(self) -> dict[str, Any]:
        """The verification as JSON (the witness input left out; figures that do not apply omitted)."""
        out: dict[str, Any] = {
            "inputs": self.inputs, "measured_on": self.measured_on, "count": self.count,
            "float64_inputs": self.float64_inputs, "max_output_error": self.max_output_error,
            "mean_output_error": self.mean_output_error, "certified_bound": self.certified_bound,
            "certified_bound_vacuous": self.vacuous, "interval_bound": self.interval_bound, "bound_method": self.bound_method,
            "certified_bound_reason": self.certified_bound_reason, "materialised": self.materialised,
            "forms": self.forms}
        if self.adversarial is not None:
            out.update(adversarial_output_error=self.adversarial_output_error, adversarial=self.adversarial)
        out.update(bound_holds=self.bound_holds, output_range_observed=self.output_range_observed)
        out.update({k: v for k, v in (("accuracy", self.accuracy), ("agreement", self.agreement),
                                      ("near_ties", self.near_ties)) if v is not None})
        if self.local_json() is not None:
            out["local"] = self.local_json()
        out.update(seconds=self.seconds, phase_seconds=self.phase_seconds)
        return out


@dataclass
class _Measured:
    """The float64 errors :func:`_measure` found: target ``f`` and collapsed form ``g`` on ``x``, the
    inputs ``measured`` of them; with ``f32`` / ``g32`` (float32, on every input) when not all were."""

    x: torch.Tensor
    measured: torch.Tensor
    f: torch.Tensor
    g: torch.Tensor
    f32: torch.Tensor | None
    g32: torch.Tensor | None
    mean_rows: slice | torch.Tensor  # the rows of ``measured`` the mean error is taken over
    subset: int  # how many were measured in float64 when not all (else len(x))
    seconds64: float  # one float64 forward of the target and the collapsed form, per input


def _measure(c: PrunedNetwork, x: torch.Tensor, collapsed: nn.Module, batch: int, lap: Callable[[str], None]) -> _Measured:
    """The errors in float64 on every input that fits :data:`FLOAT64_SECONDS`; when not all fit,
    accuracy and agreement in float32 on all, the errors in float64 on a subset (:func:`_float64_subset`)."""
    f32 = g32 = None
    measured, mean_rows = x, slice(None)
    seconds64 = _seconds_per_input([c.folded, collapsed], x, torch.float64)
    count = min(len(x), max(MIN_FLOAT64_INPUTS, int(FLOAT64_SECONDS / max(seconds64, 1e-9))))
    if len(x) > count:
        target32, collapsed32 = in_float32(c.folded, c.layers), in_float32(collapsed, c.layers)
        f32, g32 = _batched(target32, x, batch, torch.float32), _batched(collapsed32, x, batch, torch.float32)
        rows, random = _float64_subset(f32, g32, c.options.seed, count)
        measured = x[rows]
        mean_rows = slice(len(rows) - len(random), None)
        del target32, collapsed32
    lap("float32")
    f, g = _batched(c.folded, measured, batch), _batched(collapsed, measured, batch)
    lap("float64")
    return _Measured(x, measured, f, g, f32, g32, mean_rows, count, seconds64)


def _search(c: PrunedNetwork, m: _Measured, order: torch.Tensor, collapsed: nn.Module, adversarial: int,
            seconds: float, batch: int) -> dict[str, Any]:
    """The adversarial search from the measured inputs with the largest errors (``order``: the
    measured inputs, largest errors first), planned to take about ``seconds``: a step is a forward
    and a backward (about 3 forwards) per start, so fewer steps, then fewer starts."""
    top = m.measured[order[: adversarial // 2]]
    steps, restarts = 50, adversarial
    affordable = seconds / (3 * max(m.seconds64, 1e-9))
    if restarts * (steps + 1) > affordable:
        steps = max(5, int(affordable / restarts) - 1)
        restarts = max(2, min(restarts, int(affordable / (steps + 1))))
    return adversarial_search(c, c.folded, top, restarts=restarts, steps=steps, seed=c.options.seed,
                              batch=max(1, batch // 3), network=collapsed)  # backpropagation keeps activations


def _classification(fa: torch.Tensor, ga: torch.Tensor, data: Dataset | None, max_error: float) -> dict[str, Any]:
    """Accuracy (with labelled data), argmax agreement and near ties of classifier outputs on every input."""
    out: dict[str, Any] = {}
    if data is not None and fa.dim() == 2:
        y = data.y
        out["accuracy"] = {"target": float((fa.argmax(1) == y).double().mean()),
                           "pruned": float((ga.argmax(1) == y).double().mean())}
    if fa.dim() == 2 and fa.shape[1] > 1:
        out["agreement"] = float((fa.argmax(1) == ga.argmax(1)).double().mean())
        # where the argmax may differ at all: |f - g| <= e everywhere flips it only if the target's
        # top-2 margin is at most 2 e (near ties; a randomly initialised classifier has many)
        top2 = fa.topk(2, dim=1).values
        e = max(max_error, float((fa - ga).abs().max()))  # float32 errors: on every input
        out["near_ties"] = int(((top2[:, 0] - top2[:, 1]) <= 2 * e).sum())
    return out


def _forms(m: _Measured, materialised: dict[str, Any]) -> dict[str, str]:
    """Which form of the pruned network gave each figure."""
    return {
        "output errors, accuracy, agreement": "collapsed (kept sums), float64"
                                              + (" (accuracy and agreement float32)" if m.f32 is not None else ""),
        "adversarial search": "collapsed (kept sums): float32 steps, float64 measurement",
        "certified bound": "target with per-weight errors and kept sums",
        "check against the real network": f"materialised (random values x masks): float32 on "
                                          f"{materialised['float32_inputs']} inputs, float64 on "
                                          f"{materialised['float64_inputs']}",
    }


def _holds(bound: CertifiedBound, worst: float, local: LocalCertificates | str | None) -> bool | None:
    """Whether every certificate is at least every error seen: the whole domain's bound against the
    largest error measured or found, each ball's against the error found inside it (None: no bound)."""
    holds = None if bound.bound is None else bool(worst <= bound.bound)
    if isinstance(local, LocalCertificates):
        holds = local.holds and holds is not False
    return holds


def verify(c: PrunedNetwork, data: Dataset | None, samples: int = 512, adversarial: int = 16,
           radius: float | None = None) -> Verification:
    """Compare target and pruned network on the data (or ``samples`` points of the domain), bound
    their difference over the whole domain and over the l_inf ball of ``radius`` around each measured
    input (None: no local certificates; see :mod:`models.local` for a radius to use), and
    search the domain for a worse input (``adversarial`` restarts; 0: no search). See
    :class:`Verification` for what is returned."""
    start = time.perf_counter()
    check_radius(radius)
    if data is not None:
        c.domain.check_data(data)
    x = data.x if data is not None else c.domain.samples(c.input_shape, samples, c.options.seed)
    phases: dict[str, float] = {}  # seconds of each phase, reported
    clock = [time.perf_counter()]

    def lap(phase: str) -> None:
        now = time.perf_counter()
        phases[phase], clock[0] = now - clock[0], now

    collapsed = collapse(c.folded, c.layers, kept(c))
    lap("collapse")
    batch = c.plan.verify_batch if c.plan is not None else MAX_VERIFY_BATCH  # target and collapsed form
    m = _measure(c, x, collapsed, batch, lap)
    diff = (m.f - m.g).abs()
    bound = certified(c)
    lap("certified_bound")
    solve_seconds = (c.seconds or {}).get("solve")

    def planned(cap: float, share: float = 1.0) -> float:
        """Seconds for an optional phase: ``share`` of what is left of VERIFY_SHARE x the solve time."""
        if solve_seconds is None:
            return cap
        left = VERIFY_SHARE * solve_seconds - (time.perf_counter() - start)
        return min(cap, max(MIN_PLANNED_SECONDS, share * left))

    # the materialised network on the measured inputs, those with the largest errors first
    order = diff.reshape(len(m.measured), -1).amax(dim=1).argsort(descending=True)
    wide = c.plan.materialised_batch if c.plan is not None else MAX_VERIFY_BATCH
    materialised = materialised_check(c, m.measured[order], m.g[order], wide, planned(MATERIALISED_SECONDS, 0.5))
    lap("materialised")
    local = None
    if radius is not None:
        local = local_certificates(c, m.measured[order], radius, collapsed, errors(c),
                                   lambda: kept(c), LOCAL_SECONDS, batch, bound.bound)
        lap("local")
    worst = float(diff.max())
    found: dict[str, Any] = {}
    if adversarial:
        search = _search(c, m, order, collapsed, adversarial, planned(ADVERSARIAL_SECONDS), batch)
        found = {"adversarial_output_error": search.pop("adversarial_output_error"),
                 "witness": search.pop("witness"), "adversarial": search}
        worst = max(worst, found["adversarial_output_error"])
        lap("adversarial")
    fa, ga = (m.f32, m.g32) if m.f32 is not None else (m.f, m.g)  # on every input
    measured_on = None
    if m.f32 is not None:
        measured_on = (f"errors in float64 on {len(m.measured)} of its {len(x)} inputs ({m.subset // 2} with the "
                       f"largest float32 errors, the others at random; the mean over the random ones), accuracy and "
                       f"agreement on all in float32")
    return Verification(
        inputs=data.name if data is not None else f"{len(x)} samples of the domain", measured_on=measured_on,
        count=len(x), float64_inputs=len(m.measured), max_output_error=float(diff.max()),
        mean_output_error=float(diff[m.mean_rows].mean()), certificate=bound, materialised=materialised,
        forms=_forms(m, materialised), bound_holds=_holds(bound, worst, local),
        output_range_observed=[float(fa.min()), float(fa.max())], seconds=time.perf_counter() - start,
        phase_seconds=phases, local=local if isinstance(local, LocalCertificates) else None,
        local_reason=local if isinstance(local, str) else None, **found, **_classification(fa, ga, data, float(diff.max())))


def check_inputs_for(data: Dataset | None, input_shape: tuple[int, ...], domain: InputDomain, seed: int) -> torch.Tensor:
    """The inputs a ticket stores with their outputs: the first data points, else domain samples."""
    if data is not None:
        return data.x[:CHECK_INPUTS].clone()
    return domain.samples(input_shape, CHECK_INPUTS - 2, seed)
