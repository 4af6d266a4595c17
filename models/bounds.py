"""Certified bound on sup_x |f(x) - g(x)| over a box input domain, propagated layer by layer.

Per activation we carry three tensors stacked along the batch dimension: the interval [lo, hi]
of the target's activation over the domain (interval bound propagation) and delta, a bound on
|target activation - pruned activation|. The pruned pair computes ``W+ relu(x) - W- relu(-x) +
b'`` where W+ / W- are the kept coefficient sums of the positive / negative groups, so with
``E = max(|W - W+|, |W - W-|)`` (just ``|W - W+|`` for a non-negative input) and ``e_b = |b - b'|``:

    |h - h'|_next <= |W| delta + E (max(|lo|, |hi|) + delta) + e_b        (elementwise, |.| = abs)

ReLU, max pooling (|max a - max b| <= max |a - b|), average pooling, reshapes and additions are
applied to delta directly. Stacking lets every shape op of the graph (``x.view(x.size(0), -1)``
included) run unchanged on the bounds. A float64 rounding slack of 1e-9 relative to the
output's magnitude is added so the bound is never below an error observed in float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from .graph import PASS_FUNCTIONS, TargetLayer, data_dependent, with_modules
from .ops import elementwise, softmax_bounds, softmax_dim

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

    def exact(self, ids: torch.Tensor) -> torch.Tensor:
        """The stacked bound of an embedding of constant ids."""
        return torch.cat(_exact_rows(self.layer, self._errors()[0], ids.long()))

    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        E, eb = self._errors()
        if self.layer.kind == "embedding":
            return torch.cat(embedding_interval(self.layer, E, stacked[0:1], stacked[1:2]))
        return torch.cat(affine_interval(self.layer, E, eb, stacked[0:1], stacked[1:2], stacked[2:3]))


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


class NoBoundRule(Exception):
    """An op of the target has no rule here: the certified bound is not given (never a wrong number)."""


#: ops that act on the stacked (lo, hi, delta) tensor correctly as they are: they move, select or
#: sum entries of each part alike, or are monotone with delta' <= delta (ReLU, max pooling)
_AS_IS = {"relu", "add", "flatten", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d",
          "dropout", "getitem", "cat", "mean", "permute", "transpose", "movedim", "view", "reshape",
          "contiguous", "chunk", "split", "unflatten", "unsqueeze", "squeeze"}
_AS_IS_MODULES = (nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten,
                  nn.Dropout, nn.Identity)
_NO_RULE = {"layer_norm": "layer_norm (its Lipschitz constant is unbounded as the variance goes to 0)",
            "group_norm": "group_norm (its Lipschitz constant is unbounded as the variance goes to 0)"}


class _BoundInterpreter(fx.Interpreter):
    """Runs the stacked (lo, hi, delta) tensor through the graph; fixes the ops where the three
    parts must not be treated alike: adding a constant (shifts lo/hi, not delta), and the
    activations and softmax of :mod:`models.ops` (image of the interval, delta times L)."""

    def __init__(self, module: fx.GraphModule):
        super().__init__(module)
        self._modules_by_name = dict(module.named_modules())
        self._dependent = data_dependent(module, lambda m: isinstance(m, _BoundLayer))

    def _constant(self, node: Any, value: Any) -> Any:
        """A graph constant as an operand of a stacked activation: :class:`_Const` (its batch, where
        it was built from the stacked input's size, taken once)."""
        if isinstance(node, fx.Node) and not self._dependent[node] and isinstance(value, torch.Tensor):
            return _Const(value[0:1] if value.dim() and value.shape[0] == 3 else value)
        return value

    def run_node(self, n: fx.Node):
        if n.op in ("call_function", "call_method") and not self._dependent[n]:
            # shapes and constants of the graph, computed as they are: sizes read from the stacked
            # tensor say a batch of 3, which keeps lo, hi and delta apart through any reshape
            return super().run_node(n)
        kind = PASS_FUNCTIONS.get(n.target) if n.op == "call_function" else n.target if n.op == "call_method" else None
        if n.op == "call_module" and isinstance(self._modules_by_name[n.target], _BoundLayer) and \
                not self._dependent[n.args[0]]:  # a layer of constant ids (position embeddings)
            ids = self.env[n.args[0]]
            return self._modules_by_name[n.target].exact(ids[0:1] if ids.shape[0] == 3 else ids)
        if kind in ("add", "sub", "mul", "div", "neg", "pad", "matmul"):
            args, kwargs = self.fetch_args_kwargs_from_env(n)
            if any(isinstance(a, torch.Tensor) for a in args):
                args = tuple(self._constant(node, a) for node, a in zip(n.args, args))
                if kind != "add" or any(isinstance(a, (int, float, _Const)) for a in args):
                    return _arithmetic(kind, args, kwargs)  # a sum of two activations runs as it is
        if n.op in ("call_function", "call_method") and kind not in _AS_IS and \
                elementwise(n, self._modules_by_name) is None and softmax_dim(n, self._modules_by_name) is None:
            args, _ = self.fetch_args_kwargs_from_env(n)
            if any(isinstance(a, torch.Tensor) for a in args):
                name = kind or getattr(n.target, "__name__", str(n.target))
                raise NoBoundRule(_NO_RULE.get(name, name))
        if n.op == "call_module":
            mod = self._modules_by_name[n.target]
            if not isinstance(mod, (_BoundLayer, *_AS_IS_MODULES)) and elementwise(n, self._modules_by_name) is None \
                    and softmax_dim(n, self._modules_by_name) is None:
                raise NoBoundRule(type(mod).__name__)
        if n.op in ("call_module", "call_function", "call_method"):
            rule = elementwise(n, self._modules_by_name)
            dim = softmax_dim(n, self._modules_by_name)
            if rule is not None or dim is not None:
                args, _ = self.fetch_args_kwargs_from_env(n)
                x = args[0]
                lo, hi, delta = x[0:1], x[1:2], x[2:3]
                if rule is not None:
                    lo2, hi2 = rule.image(lo, hi)
                    lipschitz = rule.lipschitz_on(lo - delta, hi + delta)  # both values lie in this interval
                    return torch.cat([lo2, hi2, (lipschitz * delta).clamp(max=rule.span)])
                return torch.cat(softmax_bounds(lo, hi, delta, dim))
        return super().run_node(n)


IBP_METHOD = "interval bound propagation over the input box with per-layer weight/bias errors (models/bounds.py)"


@dataclass
class _Const:
    """A tensor constant of the graph (not stacked): lo = hi = value, delta 0."""

    value: torch.Tensor


def _parts(x):
    """(lo, hi, delta) of a stacked tensor, or of a constant (delta 0)."""
    if isinstance(x, _Const):
        return x.value, x.value, torch.zeros_like(x.value)
    if isinstance(x, torch.Tensor):
        return x[0:1], x[1:2], x[2:3]
    return x, x, 0.0


def _arithmetic(kind: str, args, kwargs) -> torch.Tensor:
    """Interval and error rules of a + b, a - b, a * b, a / c, -a, constant padding (c: a constant;
    a number or graph constant has delta 0, so adding one shifts lo/hi and not delta) and matmul.

    |ab - a'b'| <= |a| |b - b'| + |b'| |a - a'| <= mag_a delta_b + (mag_b + delta_b) delta_a."""
    if kind == "neg":
        lo, hi, d = _parts(args[0])
        return torch.cat([-hi, -lo, d])
    if kind == "pad":
        x, pad = args[0], args[1]
        value = kwargs.get("value", args[3] if len(args) > 3 else 0.0) or 0.0
        lo, hi, d = _parts(x)
        return torch.cat([F.pad(lo, pad, value=value), F.pad(hi, pad, value=value), F.pad(d, pad, value=0.0)])
    if kind == "matmul":
        return _matmul(args[0], args[1])
    (alo, ahi, ad), (blo, bhi, bd) = _parts(args[0]), _parts(args[1])
    if kind == "add":
        return torch.cat(torch.broadcast_tensors(alo + blo, ahi + bhi, ad + bd))
    if kind == "sub":
        return torch.cat([alo - bhi, ahi - blo, ad + bd + torch.zeros_like(alo - bhi)])
    if kind == "div":  # by a constant (the tracer refuses division by an activation)
        blo = bhi = 1.0 / (args[1].value if isinstance(args[1], _Const) else args[1])
    corners = torch.stack(torch.broadcast_tensors(*[torch.as_tensor(a * b) for a in (alo, ahi) for b in (blo, bhi)]))
    mag_a = torch.maximum(torch.as_tensor(alo).abs(), torch.as_tensor(ahi).abs())
    mag_b = torch.maximum(torch.as_tensor(blo).abs(), torch.as_tensor(bhi).abs())
    bd = 0.0 if kind == "div" else bd
    delta = mag_a * bd + (mag_b + bd) * ad
    return torch.cat([corners.amin(0), corners.amax(0), delta + torch.zeros_like(corners[0])])


def _matmul(a, b) -> torch.Tensor:
    """Interval and error rule of a product of two activations (batched, dim 0 kept): midpoint-radius
    interval arithmetic, and |AB - A'B'| <= |A| |B - B'| + |A - A'| |B'| with |B'| <= |B| + delta_B."""
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.dim() < 3 or b.dim() < 3:
        raise NoBoundRule("matmul that is not batched over dim 0 (both operands need 3 or more dimensions)")
    (alo, ahi, ad), (blo, bhi, bd) = _parts(a), _parts(b)
    ac, ar, bc, br = (alo + ahi) / 2, (ahi - alo) / 2, (blo + bhi) / 2, (bhi - blo) / 2
    centre = ac @ bc
    radius = ac.abs() @ br + ar @ bc.abs() + ar @ br
    mag_a, mag_b = torch.maximum(alo.abs(), ahi.abs()), torch.maximum(blo.abs(), bhi.abs())
    return torch.cat([centre - radius, centre + radius, mag_a @ bd + ad @ (mag_b + bd)])


def certified_bound(target: fx.GraphModule, layers: list[TargetLayer],
                    errors: list[Callable[[], tuple[np.ndarray, np.ndarray | None]]],
                    input_shape: tuple[int, ...], domain: tuple[float, float]) -> dict[str, object]:
    """Upper bound on max over the domain box of |f(x) - g(x)| per output, and its maximum.

    ``errors`` holds per layer (aligned with ``layers``) a function returning its (weight_error,
    bias_error), called when the propagation reaches the layer (a layer's errors at a time). Returns
    {"bound": float, "per_output": list, "slack": list (the rounding slack included per output),
    "output_range": [lo, hi], "method": str, "interval_bound": float}; :func:`models.crown.tighten`
    replaces it per output by the linear relaxation's where that is smaller. Where an op of the target
    has no rule (:class:`NoBoundRule`), every figure is None and "reason" names the op.
    """
    gm = with_modules(target, {layer.name: _BoundLayer(layer, e) for layer, e in zip(layers, errors)})
    lo = torch.full((1, *input_shape), float(domain[0]), dtype=torch.float64)
    hi = torch.full((1, *input_shape), float(domain[1]), dtype=torch.float64)
    with torch.no_grad():
        try:
            out = _BoundInterpreter(gm).run(torch.cat([lo, hi, torch.zeros_like(lo)]))
        except NoBoundRule as exc:
            why = f"no bound rule for {str(exc).splitlines()[0]}"  # (fx's interpreter appends the graph)
            return {"bound": None, "per_output": None, "slack": None, "output_range": None, "method": why,
                    "interval_bound": None, "reason": why}
    magnitude = torch.maximum(out[0].abs(), out[1].abs())
    slack = ROUNDING_SLACK * (1.0 + magnitude)
    per_output = out[2] + slack
    return {
        "bound": float(per_output.max()),
        "per_output": per_output.reshape(-1).tolist(),
        "slack": slack.reshape(-1).tolist(),
        "output_range": [float(out[0].min()), float(out[1].max())],
        "method": IBP_METHOD,
        "interval_bound": float(per_output.max()),
    }
