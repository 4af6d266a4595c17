"""What an op rule is: everything the tool knows about one parameter-free op, in one place.

A :class:`Rule` names the fx calls it covers (functions, tensor methods, module types) and owns,
for those calls:

* ``check``: why the tracer must refuse this call (an argument that would mix the batch dimension
  into others, a mode without a bound rule), or None to keep it;
* ``sign``: whether its output is >= 0 wherever its inputs' signs say so (a layer reading a
  non-negative input needs one problem per weight instead of two);
* ``interval``: how the certified bound's :class:`Bound` (lo, hi, delta) passes through it -
  :data:`AS_IS` (the op runs on each of the three alike: it moves, selects or sums entries, or is
  monotone with delta' <= delta), a function ``(call, args, kwargs)`` of the operands returning a
  Bound (graph constants as :class:`Const`; NotImplemented: run the op as it is), or None with
  ``no_interval`` the reason;
* ``relaxation``: its kind in the linear relaxation's chain (:mod:`models.crown`): "relu",
  "linear" (a linear map), "permuting" (a linear map that only moves entries), a function of the
  call returning ("maxpool", k) or None, or None (not a chain op);
* ``activation``: for elementwise activations, their :class:`models.rules.activations.Elementwise`
  parameters for this call (None: this call's arguments have no rule).

A call is seen through :class:`Call`: the node and, for a module call, the module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import operator

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

#: the interval rule of an op that acts on the stacked (lo, hi, delta) tensor correctly as it is
AS_IS = "as is"


@dataclass(frozen=True)
class Call:
    """One fx call node, the rule that covers it and, for ``call_module``, the module it calls."""

    node: fx.Node
    rule: "Rule"
    module: nn.Module | None = None
    #: per node, whether its value depends on the input's (:func:`models.fxgraph.data_dependent`)
    dependent: Mapping[fx.Node, bool] | None = None

    def depends(self, value: Any) -> bool:
        """Whether an argument is computed from the input (a node, where dependence is not known)."""
        if not isinstance(value, fx.Node):
            return False
        return True if self.dependent is None else self.dependent.get(value, True)

    def arg(self, index: int, key: str, default: Any = None) -> Any:
        """An argument given by position ``index`` or keyword ``key`` (``default`` when absent)."""
        args = self.node.args
        return args[index] if len(args) > index else self.node.kwargs.get(key, default)

    @property
    def first(self) -> Any:
        return self.node.args[0] if self.node.args else None


def same_sign(call: Call, nonneg: Callable[[Any], bool]) -> bool:
    """The default sign rule: the output is >= 0 where the first input is."""
    return nonneg(call.first)


def always(value: bool) -> Callable[[Call, Callable[[Any], bool]], bool]:
    return lambda call, nonneg: value


def all_args(call: Call, nonneg: Callable[[Any], bool]) -> bool:
    """>= 0 where both operands are (a + b, a * b, a @ b, a / b)."""
    return all(nonneg(a) for a in call.node.args[:2])


def keep(call: Call) -> str | None:
    return None


@dataclass(frozen=True)
class Rule:
    """One parameter-free op (see the module docstring)."""

    name: str
    doc: str  # one line for the supported-ops list: what is accepted, and its limits
    functions: tuple[Callable, ...] = ()
    methods: tuple[str, ...] = ()
    modules: tuple[type, ...] = ()
    check: Callable[[Call], str | None] = keep
    sign: Callable[[Call, Callable[[Any], bool]], bool] = same_sign
    interval: Any = AS_IS  # AS_IS, a function (call, args, kwargs) -> stacked tensor, or None
    no_interval: str = ""  # why there is no interval rule (interval None)
    relaxation: Any = None
    activation: Callable[[Call], Any] | None = None
    returns_tuple: bool = False  # the value is a tuple of tensors, read by getitem (chunk, split)
    rearranges: bool = False  # only rearranges entries: an embedding may read the token ids through it

    def keys(self) -> list[str]:
        """How the rule is written in a model, for the supported-ops list."""
        out = [f"nn.{m.__name__}" if m.__module__.startswith("torch.nn") else m.__name__ for m in self.modules]
        for f in self.functions:
            name = getattr(f, "__name__", str(f))
            where = next((p for p, ns in (("F", F), ("torch", torch), ("operator", operator))
                          if getattr(ns, name, None) is f), "torch")
            out.append(f"{where}.{name}")
        out += [f".{m}()" for m in self.methods]
        return out


class NoBoundRule(Exception):
    """An op of the target has no interval rule: the certified bound is not given (never a wrong number)."""


@dataclass
class Bound:
    """The certified bound's value of one activation: the interval [lo, hi] of the target's value and
    delta >= |target - pruned|, three tensors of the activation's shape with its batch dimension
    (of size 1: the box is one input region). Constants of the graph are plain tensors beside it,
    with whatever batch dimension they were built with (one read from a Bound's size, or none)."""

    lo: torch.Tensor
    hi: torch.Tensor
    delta: torch.Tensor

    def part(self, k: int) -> torch.Tensor:
        return (self.lo, self.hi, self.delta)[k]


@dataclass
class Const:
    """A tensor constant of the graph as an operand in the certified bound: lo = hi = value, delta 0."""

    value: torch.Tensor


def parts(x: Any) -> tuple[Any, Any, Any]:
    """(lo, hi, delta) of a :class:`Bound`, of a constant (delta 0) or of a number."""
    if isinstance(x, Const):
        return x.value, x.value, torch.zeros_like(x.value)
    if isinstance(x, Bound):
        return x.lo, x.hi, x.delta
    return x, x, 0.0
