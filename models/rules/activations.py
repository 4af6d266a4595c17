"""Rules of the nonlinear parameter-free ops kept as the target's own: ReLU, elementwise activations
with a bound rule, integer powers and softmax.

The certified bound (:mod:`models.bounds`) carries per activation an interval [lo, hi] of the
target's value and a bound delta on |target - pruned|. For an elementwise op phi that needs:

* the image of [lo, hi]: monotone ops map it endpoint to endpoint; the others here are unimodal
  (falling to one minimum, then rising: SiLU, GELU, Hardswish, Mish), so the image is
  [min phi, max(phi(lo), phi(hi))] where min phi is the global minimum when [lo, hi] contains its
  place (a constant slightly below the true minimum, so rounding cannot make it unsound) and
  min(phi(lo), phi(hi)) otherwise;
* a Lipschitz constant L: |phi(a) - phi(b)| <= L |a - b|, so delta' = L delta (constants rounded
  up from the maximum of |phi'| over the real line), capped by the op's span for bounded ops
  (sigmoid, tanh, ReLU6, ...: no two outputs differ by more); x ** p (integer p) has none over the
  real line, so its constant is taken on [lo - delta, hi + delta], where both values lie.

Softmax along a dimension: p_i in [exp(lo_i) / sum_j exp(hi_j), min(1, exp(hi_i) / sum_j exp(lo_j))]
and |p(a) - p(b)|_i <= min(1, 1/2 max_j |a_j - b_j|) (the rows of its Jacobian diag(p) - p p^T have
l1 norm 2 p_i (1 - p_i) <= 1/2).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from .base import Bound, Call, Rule, always, parts


@dataclass(frozen=True)
class Elementwise:
    """An elementwise op's bound parameters (see the module docstring)."""

    name: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    lipschitz: float
    nonneg: bool | None  # True: output >= 0 for every input; None: >= 0 where the input is; False: neither
    valley: tuple[float, float] | None = None  # unimodal: (where the minimum is, a value <= the minimum)
    span: float = float("inf")  # sup phi - inf phi: no two outputs differ by more (caps delta)
    #: ops without a global constant (x^p): a Lipschitz constant valid on [lo, hi], elementwise
    local: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None

    def lipschitz_on(self, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor | float:
        """A Lipschitz constant of the op on [lo, hi] (the global one unless the op has a local rule)."""
        return self.lipschitz if self.local is None else self.local(lo, hi)

    def image(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = self.fn(lo), self.fn(hi)
        if self.valley is None:  # monotone non-decreasing
            return a, b
        at, floor = self.valley
        contains = (lo <= at + 1e-3) & (hi >= at - 1e-3)  # the estimate of the place is good to 1e-5
        return torch.where(contains, torch.full_like(a, floor), torch.minimum(a, b)), torch.maximum(a, b)


def call_activation(call: Call) -> Elementwise | None:
    """The Elementwise parameters of an activation call (None where its arguments have no rule)."""
    return call.rule.activation(call)


def _elementwise_interval(call: Call, args, kwargs) -> Bound:
    rule = call_activation(call)
    lo, hi, delta = parts(args[0])
    lo2, hi2 = rule.image(lo, hi)
    lipschitz = rule.lipschitz_on(lo - delta, hi + delta)  # both values lie in this interval
    return Bound(lo2, hi2, (lipschitz * delta).clamp(max=rule.span))


def _activation_sign(call: Call, nonneg) -> bool:
    rule = call_activation(call)
    return rule.nonneg if rule.nonneg is not None else nonneg(call.first)


def _activation_check(call: Call) -> str | None:
    if call_activation(call) is None:
        return f"its arguments here have no bound rule (supported: {call.rule.doc})"
    return None


def activation_rule(name: str, doc: str, activation: Callable[[Call], Elementwise | None], functions=(),
                    methods=(), modules=()) -> Rule:
    """The rule of an elementwise activation: sign, check and interval from its :class:`Elementwise`."""
    return Rule(name, doc, tuple(functions), tuple(methods), tuple(modules), check=_activation_check,
                sign=_activation_sign, interval=_elementwise_interval, activation=activation)


# (max |phi'|, rounded up; (argmin, min rounded down)), measured on a 1e-5 grid over [-12, 12]
_SILU = (1.1, (-1.27846, -0.2785))
_GELU = (1.13, (-0.75179, -0.1701))
_GELU_TANH = (1.13, (-0.75246, -0.1701))
_HARDSWISH = (1.5, (-1.5, -0.375))
_MISH = (1.089, (-1.19243, -0.309))
#: the largest integer exponent of x ** p accepted (larger ones would overflow any bound)
MAX_POWER = 8


def _param(call: Call, attr: str, index: int, default: Any) -> Any:
    """A module's attribute or the function's argument (position ``index``, keyword ``attr``)."""
    return getattr(call.module, attr) if call.module is not None else call.arg(index, attr, default)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _leaky(call: Call) -> Elementwise | None:
    slope = _param(call, "negative_slope", 1, 0.01)
    if not _number(slope) or not 0 <= slope <= 1:
        return None
    return Elementwise("leaky_relu", lambda t: F.leaky_relu(t, slope), 1.0, None)


def _hardtanh(call: Call) -> Elementwise | None:
    lo, hi = _param(call, "min_val", 1, -1.0), _param(call, "max_val", 2, 1.0)
    if not (_number(lo) and _number(hi)) or lo > hi:
        return None
    sign = True if lo >= 0 else (None if lo <= 0 <= hi else False)
    return Elementwise("hardtanh", lambda t: F.hardtanh(t, lo, hi), 1.0, sign, span=float(hi - lo))


def _elu(call: Call) -> Elementwise | None:
    alpha = _param(call, "alpha", 1, 1.0)
    if not _number(alpha) or alpha < 0:
        return None
    return Elementwise("elu", lambda t: F.elu(t, alpha), max(1.0, float(alpha)), None)


def _softplus(call: Call) -> Elementwise | None:
    beta, threshold = _param(call, "beta", 1, 1.0), _param(call, "threshold", 2, 20.0)
    if not (_number(beta) and _number(threshold)) or beta <= 0:
        return None
    return Elementwise("softplus", lambda t: F.softplus(t, beta, threshold), 1.0, True)


def _gelu(call: Call) -> Elementwise | None:
    approx = _param(call, "approximate", 1, "none")
    rule = {"none": _GELU, "tanh": _GELU_TANH}.get(approx) if isinstance(approx, str) else None
    if rule is None:
        return None
    return Elementwise("gelu" if approx == "none" else "gelu tanh", lambda t: F.gelu(t, approximate=approx),
                       rule[0], False, rule[1])


def _power(call: Call) -> Elementwise | None:
    """x ** p for a constant integer p in [1, MAX_POWER] (GPT-2's gelu_new has x ** 3): odd p monotone,
    even p falling to 0 at 0 and rising; on [lo, hi] Lipschitz with p max(|lo|, |hi|)^(p - 1) (mean
    value theorem; rounded up by a relative 1e-12)."""
    p = call.arg(1, "exponent")
    if not isinstance(call.first, fx.Node) or not _number(p) or p != int(p) or not 1 <= p <= MAX_POWER:
        return None
    p = int(p)

    def local(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        return p * torch.maximum(lo.abs(), hi.abs()) ** (p - 1) * (1 + 1e-12)

    return Elementwise(f"pow {p}", lambda t: t ** p, float("inf"), True if p % 2 == 0 else None,
                       (0.0, 0.0) if p % 2 == 0 else None, local=local)


def _fixed(element: Elementwise) -> Callable[[Call], Elementwise | None]:
    """An activation without arguments (a method call must have none besides the tensor)."""
    def activation(call: Call) -> Elementwise | None:
        plain = call.node.op != "call_method" or (len(call.node.args) == 1 and not call.node.kwargs)
        return element if plain else None
    return activation


def _softmax_dim(call: Call) -> int | None:
    dim = call.module.dim if call.module is not None else call.arg(1, "dim")
    return dim if isinstance(dim, int) else None


def softmax_bounds(lo: torch.Tensor, hi: torch.Tensor, delta: torch.Tensor, dim: int):
    """The softmax rule (module docstring): (lo', hi', delta')."""
    low = torch.exp(lo - torch.logsumexp(hi, dim=dim, keepdim=True))
    high = torch.exp(hi - torch.logsumexp(lo, dim=dim, keepdim=True)).clamp(max=1.0)
    return low, high, (0.5 * delta.amax(dim=dim, keepdim=True)).clamp(max=1.0).expand_as(delta)


def _softmax_interval(call: Call, args, kwargs) -> Bound:
    return Bound(*softmax_bounds(*parts(args[0]), _softmax_dim(call)))


RULES = [
    Rule("relu", "ReLU (module, function or method)", (torch.relu, F.relu), ("relu",), (nn.ReLU,),
         sign=always(True), relaxation="relu"),
    activation_rule("relu6", "ReLU6", _fixed(Elementwise("relu6", F.relu6, 1.0, True, span=6.0)),
                    (F.relu6,), (), (nn.ReLU6,)),
    activation_rule("leaky_relu", "LeakyReLU with negative_slope in [0, 1]", _leaky, (F.leaky_relu,), (),
                    (nn.LeakyReLU,)),
    activation_rule("sigmoid", "Sigmoid",
                    _fixed(Elementwise("sigmoid", torch.sigmoid, 0.25, True, span=1.0)),
                    (torch.sigmoid, F.sigmoid), ("sigmoid",), (nn.Sigmoid,)),
    activation_rule("hardsigmoid", "Hardsigmoid",
                    _fixed(Elementwise("hardsigmoid", F.hardsigmoid, 1 / 6 + 1e-12, True, span=1.0)),
                    (F.hardsigmoid,), (), (nn.Hardsigmoid,)),
    activation_rule("tanh", "Tanh", _fixed(Elementwise("tanh", torch.tanh, 1.0, None, span=2.0)),
                    (torch.tanh, F.tanh), ("tanh",), (nn.Tanh,)),
    activation_rule("hardtanh", "Hardtanh (any min_val <= max_val)", _hardtanh, (F.hardtanh,), (), (nn.Hardtanh,)),
    activation_rule("elu", "ELU with alpha >= 0", _elu, (F.elu,), (), (nn.ELU,)),
    activation_rule("softplus", "Softplus (beta > 0)", _softplus, (F.softplus,), (), (nn.Softplus,)),
    activation_rule("silu", "SiLU", _fixed(Elementwise("silu", F.silu, _SILU[0], False, _SILU[1])),
                    (F.silu,), (), (nn.SiLU,)),
    activation_rule("gelu", "GELU, exact or tanh-approximated", _gelu, (F.gelu,), (), (nn.GELU,)),
    activation_rule("hardswish", "Hardswish",
                    _fixed(Elementwise("hardswish", F.hardswish, _HARDSWISH[0], False, _HARDSWISH[1])),
                    (F.hardswish,), (), (nn.Hardswish,)),
    activation_rule("mish", "Mish", _fixed(Elementwise("mish", F.mish, _MISH[0], False, _MISH[1])),
                    (F.mish,), (), (nn.Mish,)),
    activation_rule("pow", f"x ** p for a constant integer p in [1, {MAX_POWER}] (GPT-2's gelu_new)", _power,
                    (torch.pow, operator.pow), ("pow",)),
    Rule("softmax", "softmax along a constant dimension", (F.softmax, torch.softmax), ("softmax",), (nn.Softmax,),
         check=lambda call: None if _softmax_dim(call) is not None else "its dimension must be a constant int",
         sign=always(True), interval=_softmax_interval),
]
