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

import operator

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from .graph import PASS_FUNCTIONS, TargetLayer
from .ops import elementwise, softmax_bounds, softmax_dim

ROUNDING_SLACK = 1e-9


class _BoundLayer(nn.Module):
    def __init__(self, layer: TargetLayer, weight_error: np.ndarray, bias_error: np.ndarray | None):
        super().__init__()
        self.layer = layer
        self.register_buffer("E", torch.as_tensor(weight_error, dtype=torch.float64).reshape(layer.weight.shape))
        eb = np.zeros(layer.d_out) if bias_error is None else bias_error
        self.register_buffer("eb", torch.as_tensor(eb, dtype=torch.float64))

    def _apply_w(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        if self.layer.kind == "linear":
            return F.linear(x, w, b)
        c = self.layer.conv
        return F.conv2d(x, w, b, stride=c["stride"], padding=c["padding"], dilation=c["dilation"],
                        groups=c.get("groups", 1))

    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        lo, hi, delta = stacked[0:1], stacked[1:2], stacked[2:3]
        W, b = self.layer.weight, self.layer.bias
        centre, radius = (lo + hi) / 2, (hi - lo) / 2
        out_c = self._apply_w(centre, W, b)
        out_r = self._apply_w(radius, W.abs(), None)
        mag = torch.maximum(lo.abs(), hi.abs())
        eb = self.eb.reshape(1, -1, *([1] * (out_c.dim() - 2)))
        out_d = self._apply_w(delta, W.abs(), None) + self._apply_w(mag + delta, self.E, None) + eb
        return torch.cat([out_c - out_r, out_c + out_r, out_d])


class _BoundInterpreter(fx.Interpreter):
    """Runs the stacked (lo, hi, delta) tensor through the graph; fixes the ops where the three
    parts must not be treated alike: adding a constant (shifts lo/hi, not delta), and the
    activations and softmax of :mod:`models.ops` (image of the interval, delta times L)."""

    def __init__(self, module: fx.GraphModule):
        super().__init__(module)
        self._modules_by_name = dict(module.named_modules())

    def run_node(self, n: fx.Node):
        kind = PASS_FUNCTIONS.get(n.target) if n.op == "call_function" else n.target if n.op == "call_method" else None
        if kind in ("sub", "mul", "div", "neg", "pad"):
            args, kwargs = self.fetch_args_kwargs_from_env(n)
            if any(isinstance(a, torch.Tensor) for a in args):
                return _arithmetic(kind, args, kwargs)
        if n.op in ("call_module", "call_function", "call_method"):
            rule = elementwise(n, self._modules_by_name)
            dim = softmax_dim(n, self._modules_by_name)
            if rule is not None or dim is not None:
                args, _ = self.fetch_args_kwargs_from_env(n)
                x = args[0]
                lo, hi, delta = x[0:1], x[1:2], x[2:3]
                if rule is not None:
                    lo2, hi2 = rule.image(lo, hi)
                    return torch.cat([lo2, hi2, (rule.lipschitz * delta).clamp(max=rule.span)])
                return torch.cat(softmax_bounds(lo, hi, delta, dim))
        return super().run_node(n)

    def call_function(self, target, args, kwargs):
        if target in (operator.add, torch.add) and any(isinstance(a, (int, float)) for a in args):
            x = next(a for a in args if isinstance(a, torch.Tensor))
            const = next(a for a in args if isinstance(a, (int, float)))
            return torch.cat([x[0:2] + const, x[2:3]])
        return super().call_function(target, args, kwargs)

    def call_method(self, target, args, kwargs):
        if target == "add" and isinstance(args[1], (int, float)):
            return torch.cat([args[0][0:2] + args[1], args[0][2:3]])
        return super().call_method(target, args, kwargs)


IBP_METHOD = "interval bound propagation over the input box with per-layer weight/bias errors (models/bounds.py)"
CROWN_METHOD = ("linear relaxation (CROWN-style) of the target and of the error with the kept weights "
                "(models/crown.py), per output the smaller of it and interval propagation")


def _parts(x):
    """(lo, hi, delta) of a stacked tensor, or of a constant (delta 0)."""
    if isinstance(x, torch.Tensor):
        return x[0:1], x[1:2], x[2:3]
    return x, x, 0.0


def _arithmetic(kind: str, args, kwargs) -> torch.Tensor:
    """Interval and error rules of a - b, a * b, a / c, -a and constant padding (c: a constant).

    |ab - a'b'| <= |a| |b - b'| + |b'| |a - a'| <= mag_a delta_b + (mag_b + delta_b) delta_a."""
    if kind == "neg":
        lo, hi, d = _parts(args[0])
        return torch.cat([-hi, -lo, d])
    if kind == "pad":
        x, pad = args[0], args[1]
        value = kwargs.get("value", args[3] if len(args) > 3 else 0.0) or 0.0
        lo, hi, d = _parts(x)
        return torch.cat([F.pad(lo, pad, value=value), F.pad(hi, pad, value=value), F.pad(d, pad, value=0.0)])
    (alo, ahi, ad), (blo, bhi, bd) = _parts(args[0]), _parts(args[1])
    if kind == "sub":
        return torch.cat([alo - bhi, ahi - blo, ad + bd + torch.zeros_like(alo - bhi)])
    if kind == "div":  # by a constant (the tracer refuses division by an activation)
        blo = bhi = 1.0 / args[1]
    corners = torch.stack(torch.broadcast_tensors(*[torch.as_tensor(a * b) for a in (alo, ahi) for b in (blo, bhi)]))
    mag_a = torch.maximum(torch.as_tensor(alo).abs(), torch.as_tensor(ahi).abs())
    mag_b = torch.maximum(torch.as_tensor(blo).abs(), torch.as_tensor(bhi).abs())
    bd = 0.0 if kind == "div" else bd
    delta = mag_a * bd + (mag_b + bd) * ad
    return torch.cat([corners.amin(0), corners.amax(0), delta + torch.zeros_like(corners[0])])


def certified_bound(target: fx.GraphModule, layers: list[TargetLayer], errors: list[tuple[np.ndarray, np.ndarray | None]],
                    input_shape: tuple[int, ...], domain: tuple[float, float], kept=None) -> dict[str, object]:
    """Upper bound on max over the domain box of |f(x) - g(x)| per output, and its maximum.

    ``errors`` holds (weight_error, bias_error) per layer, aligned with ``layers``. ``kept``: a
    function returning per layer :func:`models.problems.kept_sums` (the pruned pairs' signed sums);
    with it, targets that :mod:`models.crown` handles get its tighter bound (both are sound, so the
    smaller is taken per output). Returns {"bound": float, "per_output": list, "output_range":
    [lo, hi], "method": str, "interval_bound": float}.
    """
    import copy

    gm = copy.deepcopy(target)
    for layer, (we, be) in zip(layers, errors):
        gm.set_submodule(layer.name, _BoundLayer(layer, we, be))
    gm.recompile()
    lo = torch.full((1, *input_shape), float(domain[0]), dtype=torch.float64)
    hi = torch.full((1, *input_shape), float(domain[1]), dtype=torch.float64)
    with torch.no_grad():
        out = _BoundInterpreter(gm).run(torch.cat([lo, hi, torch.zeros_like(lo)]))
    magnitude = torch.maximum(out[0].abs(), out[1].abs())
    slack = ROUNDING_SLACK * (1.0 + magnitude)
    per_output = out[2] + slack
    interval = float(per_output.max())
    method = IBP_METHOD
    if kept is not None:
        from .crown import chain, crown_bound

        if chain(target, layers, input_shape) is not None:
            tight = crown_bound(target, layers, kept(), input_shape, domain)
            per_output = torch.minimum(per_output.reshape(-1), tight + slack.reshape(-1))
            method = CROWN_METHOD
    return {
        "bound": float(per_output.max()),
        "per_output": per_output.reshape(-1).tolist(),
        "output_range": [float(out[0].min()), float(out[1].max())],
        "method": method,
        "interval_bound": interval,
    }
