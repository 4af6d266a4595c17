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
from typing import Any, Callable

import torch
import torch.nn as nn

from .adversarial import adversarial_search
from .bounds import certified_bound
from .collapsed import FLOAT32_AGREEMENT, FLOAT64_AGREEMENT, FormMismatchError, collapse, in_float32
from .crown import tighten
from .construct import Construction
from .data import DataError, Dataset
from .memory import MAX_VERIFY_BATCH
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


def domain_samples(input_shape: tuple[int, ...], domain: tuple[float, float], count: int, seed: int,
                   tokens: bool = False) -> torch.Tensor:
    """Uniform samples of the input box plus its two constant corners (token ids: uniform ids of the range)."""
    gen = torch.Generator().manual_seed(seed)
    lo, hi = domain
    if tokens:
        x = torch.randint(int(lo), int(hi) + 1, (count, *input_shape), generator=gen)
        return torch.cat([torch.full((1, *input_shape), int(lo)), torch.full((1, *input_shape), int(hi)), x])
    x = torch.rand((count, *input_shape), generator=gen) * (hi - lo) + lo
    return torch.cat([torch.full((1, *input_shape), lo), torch.full((1, *input_shape), hi), x])


def kept(c: Construction) -> list[tuple[list[torch.Tensor], torch.Tensor | None]]:
    """Per pair the kept sums and the kept bias (float64), formed from the masks and the regenerated
    values as the layer was solved or its ticket rebuilt (:func:`models.problems.block_sums`)."""
    return [(s.sums, s.bias_sum) for s in c.solutions]


def _errors_of(solution) -> Callable[[], tuple]:
    """A function returning a pair's (weight_error, bias_error), formed from its kept sums when called."""
    return lambda: (solution.weight_error, solution.bias_error)


def certified(c: Construction) -> dict[str, Any]:
    """The certified bound over the construction's input box: interval propagation with the weight
    errors, tightened per output by the linear relaxation where that applies (:mod:`models.crown`)."""
    interval = certified_bound(c.folded, c.layers, [_errors_of(s) for s in c.solutions],
                               c.input_shape, c.domain)
    return tighten(interval, c.folded, c.layers, lambda: kept(c),
                   c.input_shape, c.domain)


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


def materialised_check(c: Construction, x: torch.Tensor, g64: torch.Tensor, batch: int,
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


def verify(c: Construction, data: Dataset | None, samples: int = 512, adversarial: int = 16) -> dict[str, Any]:
    """Compare target and pruned network on the data (or domain samples), and search the box for a
    worse input (``adversarial`` restarts; 0: no search).

    Returns max/mean |f(x) - g(x)| (float64), accuracies and argmax agreement (with data), the count of
    near ties (inputs whose target top-2 margin is at most twice the largest error: the only ones
    whose argmax the measured errors allow to differ), the largest error the adversarial search found
    (a lower bound on the sup, with its witness input), the certified bound, which must be >= every
    error seen (``bound_holds``), the materialised network's differences from the collapsed form
    (``materialised``) and which form gave each figure (``forms``).
    """
    start = time.perf_counter()
    if data is not None:
        x = data.x
        lo, hi = float(x.min()), float(x.max())
        if lo < c.domain[0] or hi > c.domain[1]:
            raise DataError(f"data {data.name} has values in [{lo:g}, {hi:g}], outside the declared input "
                            f"domain [{c.domain[0]:g}, {c.domain[1]:g}]; the certified bound would not apply")
    else:
        x = domain_samples(c.input_shape, c.domain, samples, c.options.seed, c.tokens)
    phases: dict[str, float] = {}  # seconds of each phase, reported
    clock = [time.perf_counter()]

    def lap(phase: str) -> None:
        now = time.perf_counter()
        phases[phase], clock[0] = now - clock[0], now

    sums = kept(c)
    collapsed = collapse(c.folded, c.layers, sums)
    lap("collapse")
    target64 = c.folded  # the target's folded trace, float64: no copy of the target
    batch = c.plan.verify_batch if c.plan is not None else MAX_VERIFY_BATCH  # target and collapsed form
    wide = c.plan.materialised_batch if c.plan is not None else MAX_VERIFY_BATCH
    f32 = g32 = None
    measured = x
    mean_rows = slice(None)
    seconds64 = _seconds_per_input([target64, collapsed], x, torch.float64)
    count = min(len(x), max(MIN_FLOAT64_INPUTS, int(FLOAT64_SECONDS / max(seconds64, 1e-9))))
    if len(x) > count:  # accuracy and agreement on every input in float32, the errors on a subset
        target32, collapsed32 = in_float32(target64, c.layers), in_float32(collapsed, c.layers)
        f32, g32 = _batched(target32, x, batch, torch.float32), _batched(collapsed32, x, batch, torch.float32)
        rows, random = _float64_subset(f32, g32, c.options.seed, count)
        measured = x[rows]
        mean_rows = slice(len(rows) - len(random), None)
        del target32, collapsed32
    lap("float32")
    f = _batched(target64, measured, batch)
    g = _batched(collapsed, measured, batch)
    diff = (f - g).abs()
    lap("float64")
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
    order = diff.reshape(len(measured), -1).amax(dim=1).argsort(descending=True)
    materialised = materialised_check(c, measured[order], g[order], wide, planned(MATERIALISED_SECONDS, 0.5))
    lap("materialised")
    worst = float(diff.max())
    measured_on = None
    if f32 is not None:
        measured_on = (f"errors in float64 on {len(measured)} of its {len(x)} inputs ({count // 2} with the "
                       f"largest float32 errors, the others at random; the mean over the random ones), accuracy and "
                       f"agreement on all in float32")
    out: dict[str, Any] = {
        "inputs": data.name if data is not None else f"{len(x)} samples of the domain",
        "measured_on": measured_on,
        "count": len(x),
        "float64_inputs": len(measured),
        "max_output_error": worst,
        "mean_output_error": float(diff[mean_rows].mean()),
        "certified_bound": bound["bound"],
        "interval_bound": bound["interval_bound"],
        "bound_method": bound["method"],
        "certified_bound_reason": bound.get("reason"),  # why there is none, when there is none
        "materialised": materialised,
        "forms": {
            "output errors, accuracy, agreement": "collapsed (kept sums), float64"
                                                  + (" (accuracy and agreement float32)" if f32 is not None else ""),
            "adversarial search": "collapsed (kept sums): float32 steps, float64 measurement",
            "certified bound": "target with per-weight errors and kept sums",
            "check against the real network": f"materialised (random values x masks): float32 on "
                                              f"{materialised['float32_inputs']} inputs, float64 on "
                                              f"{materialised['float64_inputs']}",
        },
    }
    if adversarial:
        per_input = diff.reshape(len(measured), -1).amax(dim=1)
        top = measured[per_input.argsort(descending=True)[: adversarial // 2]]
        # a step is a forward and a backward (about 3 forwards) per start: fewer steps, then fewer starts
        steps, restarts = 50, adversarial
        affordable = planned(ADVERSARIAL_SECONDS) / (3 * max(seconds64, 1e-9))
        if restarts * (steps + 1) > affordable:
            steps = max(5, int(affordable / restarts) - 1)
            restarts = max(2, min(restarts, int(affordable / (steps + 1))))
        search = adversarial_search(c, target64, top, restarts=restarts, steps=steps, seed=c.options.seed,
                                    batch=max(1, batch // 3), network=collapsed)  # backpropagation keeps activations
        out["adversarial_output_error"] = search.pop("adversarial_output_error")
        out["witness"] = search.pop("witness")
        out["adversarial"] = search
        worst = max(worst, out["adversarial_output_error"])
        lap("adversarial")
    out["bound_holds"] = None if bound["bound"] is None else bool(worst <= bound["bound"])
    fa, ga = (f32, g32) if f32 is not None else (f, g)  # on every input
    out["output_range_observed"] = [float(fa.min()), float(fa.max())]
    if data is not None and fa.dim() == 2:
        y = data.y
        out["accuracy"] = {"target": float((fa.argmax(1) == y).double().mean()),
                           "pruned": float((ga.argmax(1) == y).double().mean())}
    if fa.dim() == 2 and fa.shape[1] > 1:
        out["agreement"] = float((fa.argmax(1) == ga.argmax(1)).double().mean())
        # where the argmax may differ at all: |f - g| <= e everywhere flips it only if the target's
        # top-2 margin is at most 2 e (near ties; a randomly initialised classifier has many)
        top2 = fa.topk(2, dim=1).values
        e = max(out["max_output_error"], float((fa - ga).abs().max()))  # float32 errors: on every input
        out["near_ties"] = int(((top2[:, 0] - top2[:, 1]) <= 2 * e).sum())
    out["seconds"] = time.perf_counter() - start
    out["phase_seconds"] = phases  # collapse, float32, float64, certified_bound, materialised, adversarial
    return out


def check_inputs_for(data: Dataset | None, input_shape: tuple[int, ...], domain: tuple[float, float], seed: int,
                     tokens: bool = False) -> torch.Tensor:
    """The inputs a ticket stores with their outputs: the first data points, else domain samples."""
    if data is not None:
        return data.x[:CHECK_INPUTS].clone()
    return domain_samples(input_shape, domain, CHECK_INPUTS - 2, seed, tokens)
