"""Parameter-free nonlinear ops the construction keeps as the target's own, with their bound rules.

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


@dataclass(frozen=True)
class Elementwise:
    """An elementwise op with its bound rule (see the module docstring)."""

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


# (max |phi'|, rounded up; (argmin, min rounded down)), measured on a 1e-5 grid over [-12, 12]
_SILU = (1.1, (-1.27846, -0.2785))
_GELU = (1.13, (-0.75179, -0.1701))
_GELU_TANH = (1.13, (-0.75246, -0.1701))
_HARDSWISH = (1.5, (-1.5, -0.375))
_MISH = (1.089, (-1.19243, -0.309))


def _leaky(slope: float) -> tuple[float, bool | None] | None:
    if not 0 <= slope <= 1:
        return None
    return 1.0, None


def _from_module(mod: nn.Module) -> Elementwise | None:
    if isinstance(mod, nn.ReLU6):
        return Elementwise("ReLU6", F.relu6, 1.0, True, span=6.0)
    if isinstance(mod, nn.LeakyReLU):
        rule = _leaky(mod.negative_slope)
        return None if rule is None else Elementwise("LeakyReLU", mod, rule[0], rule[1])
    if isinstance(mod, nn.Sigmoid):
        return Elementwise("Sigmoid", torch.sigmoid, 0.25, True, span=1.0)
    if isinstance(mod, nn.Hardsigmoid):
        return Elementwise("Hardsigmoid", F.hardsigmoid, 1 / 6 + 1e-12, True, span=1.0)
    if isinstance(mod, nn.Tanh):
        return Elementwise("Tanh", torch.tanh, 1.0, None, span=2.0)
    if isinstance(mod, nn.Hardtanh):  # ReLU6 is a Hardtanh too, handled above
        sign = True if mod.min_val >= 0 else (None if mod.min_val <= 0 <= mod.max_val else False)
        return Elementwise("Hardtanh", mod, 1.0, sign, span=float(mod.max_val - mod.min_val))
    if isinstance(mod, nn.ELU):
        return Elementwise("ELU", mod, max(1.0, float(mod.alpha)), None) if mod.alpha >= 0 else None
    if isinstance(mod, nn.Softplus):
        return Elementwise("Softplus", mod, 1.0, True)
    if isinstance(mod, nn.SiLU):
        return Elementwise("SiLU", F.silu, _SILU[0], False, _SILU[1])
    if isinstance(mod, nn.GELU):
        rule = _GELU if mod.approximate == "none" else _GELU_TANH
        return Elementwise("GELU", mod, rule[0], False, rule[1])
    if isinstance(mod, nn.Hardswish):
        return Elementwise("Hardswish", F.hardswish, _HARDSWISH[0], False, _HARDSWISH[1])
    if isinstance(mod, nn.Mish):
        return Elementwise("Mish", F.mish, _MISH[0], False, _MISH[1])
    return None


def _const(node: fx.Node, index: int, key: str, default: Any) -> Any:
    """A constant argument of a call (positional ``index`` or keyword ``key``); fx.Node: not constant."""
    value = node.args[index] if len(node.args) > index else node.kwargs.get(key, default)
    return value


def _from_function(node: fx.Node) -> Elementwise | None:
    target = node.target
    if target in (F.relu6,):
        return Elementwise("relu6", F.relu6, 1.0, True, span=6.0)
    if target in (torch.sigmoid, F.sigmoid):
        return Elementwise("sigmoid", torch.sigmoid, 0.25, True, span=1.0)
    if target in (torch.tanh, F.tanh):
        return Elementwise("tanh", torch.tanh, 1.0, None, span=2.0)
    if target is F.silu:
        return Elementwise("silu", F.silu, _SILU[0], False, _SILU[1])
    if target is F.hardswish:
        return Elementwise("hardswish", F.hardswish, _HARDSWISH[0], False, _HARDSWISH[1])
    if target is F.mish:
        return Elementwise("mish", F.mish, _MISH[0], False, _MISH[1])
    if target is F.gelu:
        approx = _const(node, 1, "approximate", "none")
        rule = {"none": _GELU, "tanh": _GELU_TANH}.get(approx) if isinstance(approx, str) else None
        return None if rule is None else Elementwise("gelu", lambda t: F.gelu(t, approximate=approx), rule[0],
                                                     False, rule[1])
    if target is F.leaky_relu:
        slope = _const(node, 1, "negative_slope", 0.01)
        rule = _leaky(slope) if isinstance(slope, (int, float)) else None
        return None if rule is None else Elementwise("leaky_relu", lambda t: F.leaky_relu(t, slope), *rule)
    return None


#: the largest integer exponent of x ** p accepted (larger ones would overflow any bound)
MAX_POWER = 8


def _power(node: fx.Node) -> Elementwise | None:
    """x ** p for a constant integer p in [1, MAX_POWER] (GPT-2's gelu_new has x ** 3): odd p monotone,
    even p falling to 0 at 0 and rising; on [lo, hi] Lipschitz with p max(|lo|, |hi|)^(p - 1) (mean
    value theorem; rounded up by a relative 1e-12)."""
    p = node.args[1] if len(node.args) > 1 else node.kwargs.get("exponent")
    if isinstance(p, bool) or not isinstance(p, (int, float)) or p != int(p) or not 1 <= p <= MAX_POWER:
        return None
    p = int(p)

    def local(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        return p * torch.maximum(lo.abs(), hi.abs()) ** (p - 1) * (1 + 1e-12)

    return Elementwise(f"pow {p}", lambda t: t ** p, float("inf"), True if p % 2 == 0 else None,
                       (0.0, 0.0) if p % 2 == 0 else None, local=local)


_METHODS = {"sigmoid": Elementwise("sigmoid", torch.sigmoid, 0.25, True, span=1.0),
            "tanh": Elementwise("tanh", torch.tanh, 1.0, None, span=2.0)}


def elementwise(node: fx.Node, modules: dict[str, nn.Module]) -> Elementwise | None:
    """The rule of the node's op if it is one of the elementwise ops above (on its first argument
    alone), else None."""
    if node.op == "call_module":
        return _from_module(modules[node.target])
    if (node.op == "call_function" and node.target in (torch.pow, operator.pow)) or \
            (node.op == "call_method" and node.target == "pow"):
        return _power(node) if isinstance(node.args[0], fx.Node) else None
    if node.op == "call_function":
        return _from_function(node)
    if node.op == "call_method" and len(node.args) == 1 and not node.kwargs:
        return _METHODS.get(node.target)
    return None


def softmax_dim(node: fx.Node, modules: dict[str, nn.Module]) -> int | None:
    """The dimension of a softmax node (nn.Softmax, F.softmax, torch.softmax, .softmax), else None."""
    if node.op == "call_module" and isinstance(modules[node.target], nn.Softmax):
        return modules[node.target].dim
    if (node.op == "call_function" and node.target in (F.softmax, torch.softmax)) or \
            (node.op == "call_method" and node.target == "softmax"):
        dim = _const(node, 1, "dim", None)
        return dim if isinstance(dim, int) else None
    return None


def softmax_bounds(lo: torch.Tensor, hi: torch.Tensor, delta: torch.Tensor, dim: int):
    """The softmax rule (module docstring): (lo', hi', delta')."""
    low = torch.exp(lo - torch.logsumexp(hi, dim=dim, keepdim=True))
    high = torch.exp(hi - torch.logsumexp(lo, dim=dim, keepdim=True)).clamp(max=1.0)
    return low, high, (0.5 * delta.amax(dim=dim, keepdim=True)).clamp(max=1.0).expand_as(delta)
