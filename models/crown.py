"""A tighter certified bound: linear relaxation (CROWN-style) of the target and of the error.

Interval propagation (:mod:`models.bounds`) bounds every neuron's error on its own, as if each
could take its worst value at a different input. Here the output error ``c . (g(x) - f(x))`` is
written, layer by layer backwards, as a linear function of the input plus bounded remainders, so
that errors of opposite signs cancel before the maximum over the box is taken.

For a target layer ``z = W a + b`` the pruned pair computes ``z' = S a' + b'`` on a non-negative
input (``S``: the kept coefficient sums, ``b'`` the kept bias; a signed input - only the first
layer here - gives ``S_0 a^+ - S_1 a^-``). With the error ``e = a' - a``::

    z' - z = S e + (S - W) a + (b' - b)

The term ``(S - W) a`` is a linear function of the *target's* activation ``a``, bounded by a CROWN
pass through the target (ReLU: the triangle relaxation above, slope 0 or 1 below; max pooling:
the window's element with the largest lower bound, exact where it dominates the window); ``S e``
carries the error one layer further back. Through a ReLU, ``relu(z + d) - relu(z) = s d`` with
``s`` in [0, 1]: exact where the neuron is active (s = 1) or inactive (s = 0) for every input of
the box and every error, else ``d / 2`` is carried and ``|d| / 2 <= delta / 2`` is a remainder
(``delta``: the error bound at that neuron). Through max pooling the error is carried to the
dominant element, or bounded by the window's largest ``delta``. At the input the error is zero
and the linear function is maximised coordinate by coordinate over the box (with the kinks at 0
of ``a^+``, ``a^-`` for a signed input).

The neuron bounds ``[l, u]`` and ``delta`` the relaxations need are computed the same way, one
layer after another (interval propagation first, each replaced by the tighter backward bound;
nodes wider than :data:`MAX_NEURONS` keep the interval bounds). Handles targets that are a chain
of Linear/Conv2d, ReLU, non-overlapping max pooling and linear parameter-free ops (flatten, view,
reshape, average pooling, dropout, identity); anything else returns None and interval
propagation alone is used. The box is the whole domain or a ball around an input
(:mod:`models.local`: :func:`crown_regions`, tightening only the unstable ReLUs); the per-op
relaxations are in :mod:`models.relaxations`.
"""

from __future__ import annotations

import math
import operator
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from .bounds import CertifiedBound, affine_interval
from .domain import Box
from .layers import TargetLayer
from .relaxations import RELAXATIONS, dot
from .rules import call_for

#: intermediate nodes with more neurons keep their interval bounds (the backward passes cost O(neurons))
MAX_NEURONS = 20000
#: functionals propagated backwards at once (memory: this many copies of the largest activation;
#: 4x more measured 1.5x slower on LeNet-5)
CHUNK = 256
#: targets whose backward passes would hold more than this (CHUNK functionals x the largest activation,
#: a few copies) keep interval propagation alone
MAX_BYTES = 1 << 30
#: regions (balls) relaxed together, their functionals in the same backward passes, each with its
#: region's relaxation (gathered per functional); on 2 CPU cores one at a time measured fastest (LeNet-5,
#: 40 balls: 4.4 s at 1, 5.6 s at 4, 6.6 s at 16: the gathers cost more than the fewer, larger passes save)
REGIONS = 1

@dataclass
class Step:
    """One op of the chain: ``kind`` is affine (a target layer), relu, maxpool or linear."""

    kind: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    in_shape: tuple[int, ...] = ()
    layer: TargetLayer | None = None
    permuting: bool = False  # a linear op that only moves entries (commutes with relu)
    kernel: int = 0  # maxpool
    sums: list[torch.Tensor] | None = None  # affine: S per sign group (the layer's weight shape)
    dbias: torch.Tensor | None = None  # affine: b' - b, (d_out,)


def _node_fn(node: fx.Node, prev: fx.Node, modules: dict[str, nn.Module]) -> Callable[[torch.Tensor], torch.Tensor]:
    """The node's computation as a function of its one tensor input (size/shape queries re-evaluated)."""

    def value(arg: Any, x: torch.Tensor) -> Any:
        if arg is prev:
            return x
        if isinstance(arg, fx.Node):  # a size query of the input (checked in _chain)
            args = fx.node.map_arg(arg.args, lambda a: value(a, x))
            if arg.op == "call_method":
                return getattr(args[0], arg.target)(*args[1:])
            return arg.target(*args)
        return arg

    def run(x: torch.Tensor) -> torch.Tensor:
        args = fx.node.map_arg(node.args, lambda a: value(a, x))
        kwargs = fx.node.map_arg(node.kwargs, lambda a: value(a, x))
        if node.op == "call_module":
            return modules[node.target](*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        return node.target(*args, **kwargs)

    return run


def _is_size_query(node: fx.Node, prev: fx.Node) -> bool:
    return node.all_input_nodes == [prev] and (
        (node.op == "call_method" and node.target in ("size", "dim"))
        or (node.op == "call_function" and node.target is getattr and node.args[1] == "shape")
        or (node.op == "call_function" and node.target is operator.getitem
            and isinstance(node.args[0], fx.Node) and node.args[0].op == "call_method"))


def _classify(node: fx.Node, modules: dict[str, nn.Module], layers: dict[str, TargetLayer]) -> tuple[str, Any] | None:
    """The node's step kind and parameter: ("affine", layer), ("relu", None), ("maxpool", k) or
    ("linear", permuting), from its rule's relaxation (:mod:`models.rules`); None: not a chain op."""
    if node.op == "call_module" and node.target in layers:
        return "affine", layers[node.target]
    call = call_for(node, modules)
    relaxation = None if call is None else call.rule.relaxation
    if callable(relaxation):
        return relaxation(call)
    if relaxation == "relu":
        return "relu", None
    if relaxation in ("linear", "permuting"):
        return "linear", relaxation == "permuting"
    return None


def chain(gm: fx.GraphModule, layers: list[TargetLayer], input_shape: tuple[int, ...]) -> list[Step] | None:
    """The target as a chain of steps, or None when its graph is not one this module handles (or
    its activations are too large for the backward passes, see :data:`MAX_BYTES`)."""
    modules = dict(gm.named_modules())
    by_name = {layer.name: layer for layer in layers}
    if any(layer.kind == "embedding" for layer in layers):  # token inputs: not a box to relax over
        return None
    nodes = [n for n in gm.graph.nodes]
    inputs = [n for n in nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        return None
    prev, steps = inputs[0], []
    for node in nodes:
        if node.op == "placeholder" or _is_size_query(node, prev):
            continue
        if node.op == "output":
            if node.args[0] is not prev:
                return None
            break
        tensors = [a for a in node.all_input_nodes if not _is_size_query(a, prev)]
        if tensors != [prev] or any(u is not node and not _is_size_query(u, prev) for u in prev.users):
            return None
        kind = _classify(node, modules, by_name)
        if kind is None:
            return None
        step = Step(kind[0], _node_fn(node, prev, modules))
        if kind[0] == "affine":
            step.layer = kind[1]
        elif kind[0] == "maxpool":
            step.kernel = kind[1]
        elif kind[0] == "linear":
            step.permuting = kind[1]
        steps.append(step)
        prev = node
    affine = [i for i, s in enumerate(steps) if s.kind == "affine"]
    if not affine:
        return None
    for i in affine[1:]:
        if not steps[i].layer.input_nonneg:  # a signed input after the first layer: not handled here
            return None
    first = steps[affine[0]]
    if not first.layer.input_nonneg and not all(s.kind == "linear" and s.permuting for s in steps[:affine[0]]):
        return None
    x = torch.zeros((1, *input_shape), dtype=torch.float64)
    largest = x.numel()
    with torch.no_grad():
        for step in steps:
            step.in_shape = tuple(x.shape[1:])
            x = step.fn(x)
            largest = max(largest, x.numel())
    if 6 * 8 * CHUNK * largest > MAX_BYTES:
        return None
    return steps


def _vjp(fn: Callable[[torch.Tensor], torch.Tensor], in_shape: tuple[int, ...], lam: torch.Tensor) -> torch.Tensor:
    """lam . fn(x) = (returned) . x + const for a linear or affine fn: the returned coefficients (fn
    runs forward on a batch of zeros: for the cheap parameter-free ops; a layer uses its own
    transpose, :meth:`models.layers.TargetLayer.apply_transposed`)."""
    x = torch.zeros((lam.shape[0], *in_shape), dtype=torch.float64, requires_grad=True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(fn(x), x, grad_outputs=lam)
    return g


class Relaxation:
    """Backward linear bounds over the chain, for every region of a box at once; ``bounds[i]`` =
    (l, u, delta) at the input of step i, each (regions, *shape). Every functional carried backwards
    belongs to one region (``rows``: its region's index) and is relaxed with that region's bounds."""

    def __init__(self, steps: list[Step], box: Box, unstable_only: bool = False):
        """``unstable_only``: tighten only the ReLU inputs interval propagation leaves unstable (on some
        inputs of the region and off on others, or flipped by the error): the others are exact in the
        relaxation already, so a small region (a ball around an input) costs its unstable neurons only."""
        self.unstable_only = unstable_only
        self.steps = steps
        self.lo, self.hi = box.lo, box.hi  # (regions, *input shape)
        self.regions = len(box)
        self.bounds: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None] = [None] * (len(steps) + 1)
        self._coeffs: dict[tuple, list[torch.Tensor]] = {}

    def _at(self, t: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """A per-region tensor for each functional of ``rows`` (one region: broadcast, not copied)."""
        return t[:1] if self.regions == 1 else t[rows]

    def _set_bounds(self, i: int, bounds: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
        self.bounds[i] = bounds
        for part in ("target", "error"):  # the coefficients of the bounds before are stale
            self._coeffs.pop((i, part), None)

    def _relax(self, i: int, part: str, lam: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The relaxation of nonlinear step i (of the target or of the ``error``) applied to ``lam``,
        its per-region coefficients computed once from the step's bounds."""
        coeffs_of, apply = RELAXATIONS[(self.steps[i].kind, part)]
        key = (i, part)
        if key not in self._coeffs:
            self._coeffs[key] = coeffs_of(*self.bounds[i], self.steps[i].kernel)
        return apply(lam, [self._at(t, rows) for t in self._coeffs[key]], self.steps[i].in_shape)

    # --- the target: upper bound of lam . a_i (a_i: the target's value at the input of step i) ---
    def target_backward(self, lam: torch.Tensor, upto: int, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(coefficients on x, constant) with lam . a_upto <= coefficients . x + constant on each row's region."""
        const = torch.zeros(lam.shape[0], dtype=torch.float64)
        for i in range(upto - 1, -1, -1):
            step = self.steps[i]
            if step.kind == "affine":
                const += dot(lam, step.fn(torch.zeros((1, *step.in_shape), dtype=torch.float64))[0])
                lam = step.layer.apply_transposed(lam, step.layer.weight64(), step.in_shape)
            elif step.kind == "linear":
                lam = _vjp(step.fn, step.in_shape, lam)
            else:
                lam, c = self._relax(i, "target", lam, rows)
                const += c
        return lam, const

    # --- the error: upper bound of rho . (a'_i - a_i) ---
    def error_backward(self, rho: torch.Tensor, upto: int,
                       rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(on x, on x^+, on x^-, constant): rho . e_upto <= A.x + P.x^+ + Q.x^- + constant on each row's region."""
        k = rho.shape[0]
        shape = (k, *self.steps[0].in_shape) if self.steps else rho.shape
        on_x = torch.zeros(shape, dtype=torch.float64)
        on_pos, on_neg = torch.zeros(shape, dtype=torch.float64), torch.zeros(shape, dtype=torch.float64)
        const = torch.zeros(k, dtype=torch.float64)
        for i in range(upto - 1, -1, -1):
            step = self.steps[i]
            if step.kind == "affine":
                layer = step.layer
                const += dot(rho, step.dbias.reshape(-1, *([1] * (len(self._out_shape(i)) - 1))).expand(self._out_shape(i)))
                first = all(s.kind != "affine" for s in self.steps[:i])
                mu = layer.apply_transposed(rho, step.sums[0] - layer.weight, step.in_shape)
                if first and not layer.input_nonneg:  # (S_0 - W) a^+ - (S_1 - W) a^-; a = x moved around
                    mu1 = layer.apply_transposed(rho, step.sums[1] - layer.weight, step.in_shape)
                    on_pos += self.target_backward(mu, i, rows)[0]
                    on_neg -= self.target_backward(mu1, i, rows)[0]
                    return on_x, on_pos, on_neg, const
                coef, c0 = self.target_backward(mu, i, rows)
                on_x += coef
                const += c0
                if first:  # the error is zero before the first layer
                    return on_x, on_pos, on_neg, const
                rho = layer.apply_transposed(rho, step.sums[0], step.in_shape)
            elif step.kind == "linear":
                rho = _vjp(step.fn, step.in_shape, rho)
            else:
                rho, c = self._relax(i, "error", rho, rows)
                const += c
        return on_x, on_pos, on_neg, const

    def _out_shape(self, i: int) -> tuple[int, ...]:
        return self.steps[i + 1].in_shape if i + 1 < len(self.steps) else self.out_shape

    def maximise(self, on_x: torch.Tensor, on_pos: torch.Tensor, on_neg: torch.Tensor, const: torch.Tensor,
                 rows: torch.Tensor) -> torch.Tensor:
        """max over each row's region of on_x.x + on_pos.x^+ + on_neg.x^- + const, coordinate by
        coordinate: at one of the coordinate's ends or, inside, at the kink 0 (where the value is 0)."""
        lo, hi = self._at(self.lo, rows), self._at(self.hi, rows)

        def at(v: torch.Tensor) -> torch.Tensor:
            return on_x * v + on_pos * v.clamp(min=0.0) + on_neg * (-v).clamp(min=0.0)

        best = torch.maximum(at(lo), at(hi))
        inside = (lo < 0) & (hi > 0)
        if bool(inside.any()):
            best = torch.where(inside, best.clamp(min=0.0), best)
        return best.flatten(1).sum(1) + const

    def neuron_bounds(self, upto: int, error: bool, needed: torch.Tensor | None = None) -> torch.Tensor:
        """Upper bounds of +-(each neuron) at the input of step ``upto`` (or the output) over each region:
        (2, regions, *shape); with ``needed`` (a bool mask, (regions, *shape)) only those, the others +inf."""
        shape = self.steps[upto].in_shape if upto < len(self.steps) else self.out_shape
        count = int(np.prod(shape))
        cells = self.regions * count
        out = torch.full((2 * cells,), math.inf, dtype=torch.float64)
        picked = torch.arange(cells) if needed is None else torch.nonzero(needed.reshape(-1)).flatten()
        every = torch.cat([picked, picked + cells])
        for start in range(0, len(every), CHUNK):
            cell = every[start:start + CHUNK]
            rows, neuron = (cell % cells) // count, cell % count
            lam = torch.zeros((len(cell), count), dtype=torch.float64)
            lam[torch.arange(len(cell)), neuron] = torch.where(cell < cells, 1.0, -1.0).double()
            lam = lam.view(len(cell), *shape)
            if error:
                out[cell] = self.maximise(*self.error_backward(lam, upto, rows), rows)
            else:
                out[cell] = self._target_max(lam, upto, rows)
        return out.view(2, self.regions, *shape)

    def run(self, interval_step: Callable, out_shape: tuple[int, ...]) -> torch.Tensor:
        """Bounds at every nonlinearity's input (interval bounds tightened by the backward ones),
        then the per-output error bound (upper bound of |g - f| per output): (regions, outputs)."""
        self.out_shape = out_shape
        shape = (self.regions, *self.steps[0].in_shape)
        cur = (self.lo.reshape(shape).clone(), self.hi.reshape(shape).clone(), torch.zeros(shape, dtype=torch.float64))
        for i, step in enumerate(self.steps):
            # right after a ReLU (max pooling of its output) its interval image of the bounds at its input is
            # kept: no backward bound is tighter per neuron (for relu(z): slopes 0/1 below, the triangle's upper
            # side meets relu at z's upper bound; for the error: delta where unstable or active, 0 where off)
            after_relu = i > 0 and self.steps[i - 1].kind == "relu"
            if step.kind in ("relu", "maxpool") and int(np.prod(step.in_shape)) <= MAX_NEURONS and not after_relu:
                l, u = cur[0], cur[1]
                relu = step.kind == "relu" and self.unstable_only
                if sum(s.kind == "affine" for s in self.steps[:i]) >= 2:  # after one layer intervals are exact
                    t = self.neuron_bounds(i, error=False, needed=((l < 0) & (u > 0)) if relu else None)
                    l, u = torch.maximum(cur[0], -t[1]), torch.minimum(cur[1], t[0])
                self._set_bounds(i, (l, u, cur[2]))
                e = self.neuron_bounds(i, error=True, needed=((l < cur[2]) & (u > -cur[2])) if relu else None)
                cur = (l, u, torch.minimum(cur[2], torch.maximum(e[0], e[1]).clamp(min=0)))
            self._set_bounds(i, cur)
            cur = interval_step(step, *cur)
        up = self.neuron_bounds(len(self.steps), error=True)
        return torch.minimum(torch.maximum(up[0], up[1]), cur[2]).reshape(self.regions, -1)

    def margins(self, top: torch.Tensor) -> torch.Tensor:
        """After :meth:`run`: per region r and output j an upper bound of f_j - f_top[r] over the region
        (the target's margin; 0 at j = top[r]): (regions, outputs)."""
        count = int(np.prod(self.out_shape))
        rows = torch.arange(self.regions).repeat_interleave(count)
        lam = torch.eye(count, dtype=torch.float64).repeat(self.regions, 1)
        lam[torch.arange(len(rows)), top[rows]] -= 1.0
        lam = lam.view(len(rows), *self.out_shape)
        out = torch.cat([self._target_max(lam[i:i + CHUNK], len(self.steps), rows[i:i + CHUNK])
                         for i in range(0, len(rows), CHUNK)])
        return out.view(self.regions, count)

    def _target_max(self, lam: torch.Tensor, upto: int, rows: torch.Tensor) -> torch.Tensor:
        """Upper bound of lam . a_upto over each row's region (the target's backward bound, maximised)."""
        coef, const = self.target_backward(lam, upto, rows)
        zero = torch.zeros_like(coef)
        return self.maximise(coef, zero, zero, const, rows)


def interval_step(step: Step, lo: torch.Tensor, hi: torch.Tensor, delta: torch.Tensor):
    """Interval propagation of (l, u, delta), each (regions, *shape), through one step (as models.bounds)."""
    if step.kind == "affine":
        err = torch.stack([(s - step.layer.weight).abs() for s in step.sums]).amax(0)
        return affine_interval(step.layer, err, step.dbias.abs(), lo, hi, delta)
    if step.kind == "relu":
        return lo.clamp(min=0), hi.clamp(min=0), torch.minimum(delta, (hi + delta).clamp(min=0))
    if step.kind == "maxpool":
        return F.max_pool2d(lo, step.kernel), F.max_pool2d(hi, step.kernel), F.max_pool2d(delta, step.kernel)
    return step.fn(lo), step.fn(hi), step.fn(delta)  # linear, non-negative maps (reshape, averages)


CROWN_METHOD = ("linear relaxation (CROWN-style) of the target and of the error with the kept weights "
                "(models/crown.py), per output the smaller of it and interval propagation")


def attach_sums(steps: list[Step], layers: list[TargetLayer], sums: list[tuple[list[torch.Tensor], torch.Tensor | None]]) -> None:
    """Give every affine step its pair's kept sums per sign group and b' - b (``sums`` aligned with
    ``layers``, as :func:`models.problems.kept_sums` returns them)."""
    by_name = {layer.name: s for layer, s in zip(layers, sums)}
    for step in steps:
        if step.kind == "affine":
            group_sums, bias = by_name[step.layer.name]
            step.sums = [s.reshape(step.layer.weight.shape).double() for s in group_sums]
            b = step.layer.bias if step.layer.bias is not None else torch.zeros(step.layer.d_out, dtype=torch.float64)
            step.dbias = (bias.double() if bias is not None else torch.zeros_like(b)) - b


def crown_bound(target: fx.GraphModule, layers: list[TargetLayer], kept: Callable[[], list],
                box: Box) -> torch.Tensor | None:
    """Per-output upper bound on sup over the box of |f(x) - g(x)|, or None when the target is not
    a chain this module handles. ``kept``: returns per layer the kept sums per sign group and kept
    bias (:func:`models.problems.kept_sums`), aligned with ``layers``; called only for a chain."""
    prepared = _prepare(target, layers, kept, box.input_shape)
    if prepared is None:
        return None
    steps, out_shape = prepared
    with torch.no_grad():
        return Relaxation(steps, box).run(interval_step, out_shape)[0]


def _prepare(target: fx.GraphModule, layers: list[TargetLayer], kept: Callable[[], list],
             input_shape: tuple[int, ...]) -> tuple[list[Step], tuple[int, ...]] | None:
    """The chain's steps with their kept sums, and the output's shape; None when not a chain."""
    steps = chain(target, layers, input_shape)
    if steps is None:
        return None
    attach_sums(steps, layers, kept())
    with torch.no_grad():
        out = target(torch.zeros((1, *input_shape), dtype=torch.float64))
    return steps, tuple(out.shape[1:])


def crown_regions(target: fx.GraphModule, layers: list[TargetLayer], kept: Callable[[], list], box: Box,
                  deadline: float, top: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """Per region of ``box`` (in order) its per-output bound as :func:`crown_bound` computes it, the
    unstable neurons only (see :class:`Relaxation`), :data:`REGIONS` regions at a time until
    ``time.perf_counter()`` passes ``deadline`` (at least one group): (regions bounded, outputs), and
    with ``top`` (an output per region) :meth:`Relaxation.margins` of those regions; None when the
    target is not a chain."""
    prepared = _prepare(target, layers, kept, box.input_shape)
    if prepared is None:
        return None
    steps, out_shape = prepared
    bounds, margins = [], []
    with torch.no_grad():
        for i in range(0, len(box), REGIONS):
            if bounds and time.perf_counter() > deadline:
                break
            relaxation = Relaxation(steps, box.part(i, i + REGIONS), unstable_only=True)
            bounds.append(relaxation.run(interval_step, out_shape))
            if top is not None:
                margins.append(relaxation.margins(top[i:i + REGIONS]))
    return torch.cat(bounds), (torch.cat(margins) if top is not None else None)


def tighten(interval: CertifiedBound, target: fx.GraphModule, layers: list[TargetLayer], kept: Callable[[], list],
            box: Box) -> CertifiedBound:
    """The interval bound (:func:`models.bounds.certified_bound`) replaced per output by the linear
    relaxation's (plus the same rounding slack) where that is smaller; both are sound."""
    if interval.bound is None:  # an op without a rule: no bound at all
        return interval
    tight = crown_bound(target, layers, kept, box)
    if tight is None:
        return interval
    per_output = torch.minimum(torch.tensor(interval.per_output), tight + torch.tensor(interval.slack))
    return replace(interval, bound=float(per_output.max()), per_output=per_output.tolist(), method=CROWN_METHOD)
