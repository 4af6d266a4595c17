"""Certified bound on sup_x |f(x) - g(x)| over a box input domain, propagated layer by layer.

Per activation we carry a :class:`models.rules.Bound`: the interval [lo, hi]
of the target's activation over the domain (interval bound propagation) and delta, a bound on
|target activation - pruned activation|. The pruned pair computes ``W+ relu(x) - W- relu(-x) +
b'`` where W+ / W- are the kept coefficient sums of the positive / negative groups, so with
``E = max(|W - W+|, |W - W-|)`` (just ``|W - W+|`` for a non-negative input) and ``e_b = |b - b'|``:

    |h - h'|_next <= |W| delta + E (max(|lo|, |hi|) + delta) + e_b        (elementwise, |.| = abs)

ReLU, max pooling (|max a - max b| <= max |a - b|), average pooling, reshapes and additions are
applied to lo, hi and delta alike, each with the batch dimension of one input region, so every
shape op of the graph (``x.view(x.size(0), -1)`` included) runs unchanged on each, and a constant
of the graph keeps whatever batch dimension it was built with (none for a buffer). A float64 rounding slack of 1e-9 relative to the
output's magnitude is added so the bound is never below an error observed in float64.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn

from .domain import Box
from .fxgraph import data_dependent, with_modules
from .layers import TargetLayer
from .rules import AS_IS, Bound, Const, NoBoundRule, call_for

ROUNDING_SLACK = 1e-9


class _BoundLayer(nn.Module):
    """A pair in interval propagation: the target layer and its errors, formed when the layer is reached
    (``errors()`` returns (weight_error, bias_error)), so at most one layer's errors are held."""

    def __init__(self, layer: TargetLayer, errors: Callable[[], tuple[np.ndarray, np.ndarray | None]]):
        super().__init__()
        self.layer = layer
        self.errors = errors

    def _errors(self) -> tuple[torch.Tensor, torch.Tensor]:
        we, be = self.errors()
        E = torch.as_tensor(we, dtype=torch.float64).reshape(self.layer.weight.shape)
        eb = torch.zeros(self.layer.d_out, dtype=torch.float64) if be is None else torch.as_tensor(be, dtype=torch.float64)
        return E, eb

    def exact(self, ids: torch.Tensor) -> Bound:
        """The bound of an embedding of constant ids (shaped as the ids are: no batch of its own)."""
        return Bound(*_exact_rows(self.layer, self._errors()[0], ids.long()))

    def forward(self, x: Bound) -> Bound:
        E, eb = self._errors()
        if self.layer.kind == "embedding":
            return Bound(*embedding_interval(self.layer, E, x.lo, x.hi))
        return Bound(*affine_interval(self.layer, E, eb, x.lo, x.hi, x.delta))


def _exact_rows(layer: TargetLayer, E: torch.Tensor, ids: torch.Tensor) -> list[torch.Tensor]:
    """An embedding of constant ids: its value exactly, off by the weight errors of those rows."""
    value = layer.weight64().T[ids]
    return [value, value, E.T[ids]]


def embedding_interval(layer: TargetLayer, E: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor):
    """An embedding over the token ids in [lo, hi] (exact ids: no input error): each output feature lies
    between the smallest and largest of its row over those tokens, and is off by at most the largest
    of their weight errors (the pair computes the token's column of kept sums)."""
    first, last = int(lo.min()), int(hi.max())
    W, Er = layer.weight64()[:, first:last + 1], E[:, first:last + 1]
    shape = (1, *lo.shape[1:], layer.d_out)
    return (W.amin(dim=1).expand(shape), W.amax(dim=1).expand(shape), Er.amax(dim=1).expand(shape))


def affine_interval(layer: TargetLayer, E: torch.Tensor, eb: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor,
                    delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Interval propagation through one pair (the module docstring's rule), batched tensors in and out:
    E the per-weight errors (the weight's shape), eb the per-bias errors (d_out,)."""
    W, b = layer.weight64(), layer.bias
    centre, radius = (lo + hi) / 2, (hi - lo) / 2
    out_c = layer.apply(centre, W, b)
    out_r = layer.apply(radius, W.abs())
    mag = torch.maximum(lo.abs(), hi.abs())
    eb = eb if layer.kind == "linear" else eb.reshape(1, -1, *([1] * (out_c.dim() - 2)))  # features last / dim 1
    out_d = layer.apply(delta, W.abs()) + layer.apply(mag + delta, E) + eb
    return out_c - out_r, out_c + out_r, out_d


def _part(value: Any, k: int) -> Any:
    """``value`` with every :class:`Bound` in it replaced by its part k (0 lo, 1 hi, 2 delta)."""
    return fx.node.map_aggregate(value, lambda v: v.part(k) if isinstance(v, Bound) else v)


def _has_bound(value: Any) -> bool:
    found = []
    fx.node.map_aggregate(value, lambda v: found.append(v) if isinstance(v, Bound) else None)
    return bool(found)


def _join(lo: Any, hi: Any, delta: Any) -> Any:
    """Three results of an op run on lo, hi and delta as one value: a Bound per tensor."""
    if isinstance(lo, torch.Tensor):
        return Bound(lo, hi, delta)
    if isinstance(lo, (tuple, list)):
        return type(lo)(_join(*t) for t in zip(lo, hi, delta))
    return lo


class _BoundInterpreter(fx.Interpreter):
    """Runs a :class:`Bound` (lo, hi, delta) through the graph, each op by its rule's interval rule
    (:mod:`models.rules`): on each of the three alike, or by a rule of its own where they must not be
    treated alike (adding a constant shifts lo / hi, not delta; activations map the interval and
    scale delta by their Lipschitz constant). Constants of the graph are computed as they are."""

    def __init__(self, module: fx.GraphModule):
        super().__init__(module)
        self._modules_by_name = dict(module.named_modules())
        self._dependent = data_dependent(module, lambda m: isinstance(m, _BoundLayer))

    def _constant(self, node: Any, value: Any) -> Any:
        """A graph constant as an operand of an activation: :class:`Const`."""
        if isinstance(node, fx.Node) and not self._dependent[node] and isinstance(value, torch.Tensor):
            return Const(value)
        return value

    def _run(self, n: fx.Node, args, kwargs) -> Any:
        return getattr(self, n.op)(n.target, args, kwargs)

    def _as_is(self, n: fx.Node, args, kwargs) -> Any:
        if not _has_bound((args, kwargs)):
            return self._run(n, args, kwargs)
        return _join(*(self._run(n, _part(args, k), _part(kwargs, k)) for k in range(3)))

    def run_node(self, n: fx.Node):
        if n.op not in ("call_module", "call_function", "call_method"):
            return super().run_node(n)
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        if n.op != "call_module" and not self._dependent[n]:
            # shapes and constants of the graph, computed as they are: a size read from a Bound is its
            # lo's (batch 1), so shapes built from it broadcast against lo, hi and delta alike
            return self._run(n, _part(args, 0), _part(kwargs, 0))
        module = self._modules_by_name.get(n.target) if n.op == "call_module" else None
        if isinstance(module, _BoundLayer):
            return module(args[0]) if isinstance(args[0], Bound) else module.exact(args[0])  # constant ids
        call = call_for(n, self._modules_by_name, self._dependent)
        if call is None or call.rule.interval is None:
            if module is not None or _has_bound(args):
                name = type(module).__name__ if module is not None else getattr(n.target, "__name__", str(n.target))
                raise NoBoundRule(name if call is None else f"{call.rule.name} ({call.rule.no_interval})")
            return self._run(n, args, kwargs)
        if call.rule.interval is AS_IS or not _has_bound(args):
            return self._as_is(n, args, kwargs)
        out = call.rule.interval(call, tuple(self._constant(node, a) for node, a in zip(n.args, args)), kwargs)
        return self._as_is(n, args, kwargs) if out is NotImplemented else out


IBP_METHOD = "interval bound propagation over the input box with per-layer weight/bias errors (models/bounds.py)"


@dataclass(frozen=True)
class CertifiedBound:
    """A certified bound on sup |f(x) - g(x)| over the input domain: ``bound`` is the largest of
    ``per_output`` (each including its rounding ``slack``), ``interval_bound`` interval propagation's
    alone, ``output_range`` the target's own range over the domain. Where an op of the target has no
    bound rule every figure is None and ``reason`` names the op."""

    bound: float | None
    per_output: list[float] | None
    slack: list[float] | None
    output_range: list[float] | None
    method: str
    interval_bound: float | None
    reason: str | None = None

    @classmethod
    def none(cls, reason: str) -> "CertifiedBound":
        """No bound, for ``reason``."""
        return cls(None, None, None, None, reason, None, reason)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def interval_bounds(target: fx.GraphModule, layers: list[TargetLayer],
                    errors: list[Callable[[], tuple[np.ndarray, np.ndarray | None]]], box: Box) -> tuple[Bound, torch.Tensor]:
    """Interval propagation over every region of ``box`` at once: the output's :class:`Bound`
    (regions first) and the float64 rounding slack to add to its delta. Raises :class:`NoBoundRule`
    for an op without a rule."""
    gm = with_modules(target, {layer.name: _BoundLayer(layer, e) for layer, e in zip(layers, errors)})
    with torch.no_grad():
        out = _BoundInterpreter(gm).run(Bound(box.lo, box.hi, torch.zeros_like(box.lo)))
    if not isinstance(out, Bound):  # an output no input reaches: computed alike by both networks
        out = Bound(out, out, torch.zeros_like(out))
    return out, ROUNDING_SLACK * (1.0 + torch.maximum(out.lo.abs(), out.hi.abs()))


def certified_bound(target: fx.GraphModule, layers: list[TargetLayer],
                    errors: list[Callable[[], tuple[np.ndarray, np.ndarray | None]]],
                    box: Box) -> CertifiedBound:
    """Upper bound on max over the box (one region: the domain, or a ball) of |f(x) - g(x)| per
    output, and its maximum.

    ``errors`` holds per layer (aligned with ``layers``) a function returning its (weight_error,
    bias_error), called when the propagation reaches the layer (a layer's errors at a time).
    :func:`models.crown.tighten` replaces it per output by the linear relaxation's where that is
    smaller. Where an op of the target has no rule (:class:`NoBoundRule`), there is no bound and the
    reason names the op.
    """
    if len(box) != 1:
        raise ValueError(f"certified_bound bounds one region; got {len(box)} (interval_bounds takes several)")
    try:
        out, slack = interval_bounds(target, layers, errors, box)
    except NoBoundRule as exc:
        why = f"no bound rule for {str(exc).splitlines()[0]}"  # (fx's interpreter appends the graph)
        return CertifiedBound.none(why)
    per_output = out.delta + slack
    return CertifiedBound(bound=float(per_output.max()), per_output=per_output.reshape(-1).tolist(),
                          slack=slack.reshape(-1).tolist(), output_range=[float(out.lo.min()), float(out.hi.max())],
                          method=IBP_METHOD, interval_bound=float(per_output.max()))
