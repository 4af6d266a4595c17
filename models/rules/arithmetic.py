"""Rules of arithmetic between activations and constants: +, -, *, /, negation, constant padding
and matmul (attention's products of two activations).

Interval and error rules (a number or graph constant has delta 0, so adding one shifts lo / hi and
not delta): |ab - a'b'| <= |a| |b - b'| + |b'| |a - a'| <= mag_a delta_b + (mag_b + delta_b) delta_a;
for matmul, midpoint-radius interval arithmetic and |AB - A'B'| <= |A| |B - B'| + |A - A'| |B'| with
|B'| <= |B| + delta_B.
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F

from .base import Bound, Call, Const, NoBoundRule, Rule, all_args, always, parts


def _unit_alpha(call: Call) -> str | None:
    alpha = call.node.kwargs.get("alpha", 1)
    return None if alpha == 1 else f"alpha={alpha!r}; only alpha 1 (a + b, a - b)"


def _add(call: Call, args, kwargs) -> Bound:
    if not any(isinstance(a, (int, float, Const)) for a in args):
        return NotImplemented  # a sum of two activations: the stacked parts add as they are
    (alo, ahi, ad), (blo, bhi, bd) = parts(args[0]), parts(args[1])
    return Bound(*torch.broadcast_tensors(alo + blo, ahi + bhi, ad + bd))


def _sub(call: Call, args, kwargs) -> Bound:
    (alo, ahi, ad), (blo, bhi, bd) = parts(args[0]), parts(args[1])
    return Bound(alo - bhi, ahi - blo, ad + bd + torch.zeros_like(alo - bhi))


def _neg(call: Call, args, kwargs) -> Bound:
    lo, hi, d = parts(args[0])
    return Bound(-hi, -lo, d)


def _product(a, b, divide: bool = False) -> Bound:
    (alo, ahi, ad), (blo, bhi, bd) = parts(a), parts(b)
    if divide:  # by a constant (the tracer refuses division by an activation)
        blo = bhi = 1.0 / (b.value if isinstance(b, Const) else b)
        bd = 0.0
    corners = torch.stack(torch.broadcast_tensors(*[torch.as_tensor(x * y) for x in (alo, ahi) for y in (blo, bhi)]))
    mag_a = torch.maximum(torch.as_tensor(alo).abs(), torch.as_tensor(ahi).abs())
    mag_b = torch.maximum(torch.as_tensor(blo).abs(), torch.as_tensor(bhi).abs())
    delta = mag_a * bd + (mag_b + bd) * ad
    return Bound(corners.amin(0), corners.amax(0), delta + torch.zeros_like(corners[0]))


def _mul(call: Call, args, kwargs) -> Bound:
    return _product(args[0], args[1])


def _div(call: Call, args, kwargs) -> Bound:
    return _product(args[0], args[1], divide=True)


def _div_check(call: Call) -> str | None:
    if call.node.kwargs.get("rounding_mode") is not None:
        return f"rounding_mode={call.node.kwargs['rounding_mode']!r} (only true division)"
    divisor = call.arg(1, "other")
    if call.depends(divisor):
        return "division by an activation (only by a constant)"
    return None


def _pad_check(call: Call) -> str | None:
    mode = call.arg(2, "mode", "constant")
    return None if mode == "constant" else f"pad mode {mode!r}; only 'constant' has a bound rule here"


def _pad_sign(call: Call, nonneg) -> bool:
    value = call.arg(3, "value", 0)
    return nonneg(call.first) and isinstance(value, (int, float)) and value >= 0


def _pad(call: Call, args, kwargs) -> Bound:
    x, pad = args[0], args[1]
    value = kwargs.get("value", args[3] if len(args) > 3 else 0.0) or 0.0
    lo, hi, d = parts(x)
    return Bound(F.pad(lo, pad, value=value), F.pad(hi, pad, value=value), F.pad(d, pad, value=0.0))


def _matmul(call: Call, args, kwargs) -> Bound:
    a, b = args[0], args[1]
    if not (isinstance(a, Bound) and isinstance(b, Bound)) or a.lo.dim() < 3 or b.lo.dim() < 3:
        raise NoBoundRule("matmul that is not batched over dim 0 (both operands need 3 or more dimensions)")
    (alo, ahi, ad), (blo, bhi, bd) = parts(a), parts(b)
    ac, ar, bc, br = (alo + ahi) / 2, (ahi - alo) / 2, (blo + bhi) / 2, (bhi - blo) / 2
    centre = ac @ bc
    radius = ac.abs() @ br + ar @ bc.abs() + ar @ br
    mag_a, mag_b = torch.maximum(alo.abs(), ahi.abs()), torch.maximum(blo.abs(), bhi.abs())
    return Bound(centre - radius, centre + radius, mag_a @ bd + ad @ (mag_b + bd))


RULES = [
    Rule("add", "a + b of activations and constants (residuals, biases of the graph; alpha 1)",
         (operator.add, torch.add, operator.iadd), ("add",), check=_unit_alpha, sign=all_args, interval=_add),
    Rule("sub", "a - b (alpha 1)", (operator.sub, torch.sub), ("sub",), check=_unit_alpha, sign=always(False),
         interval=_sub),
    Rule("mul", "a * b: by a constant, or of two activations", (operator.mul, torch.mul), ("mul",), sign=all_args,
         interval=_mul),
    Rule("div", "a / c by a constant of the graph", (operator.truediv, torch.div), ("div",), check=_div_check,
         sign=all_args, interval=_div),
    Rule("neg", "-a", (operator.neg,), sign=always(False), interval=_neg),
    Rule("pad", "F.pad in mode 'constant'", (F.pad,), check=_pad_check, sign=_pad_sign, interval=_pad),
    Rule("matmul", "a @ b of two activations batched over dim 0 (attention)", (torch.matmul, operator.matmul),
         ("matmul",), sign=all_args, interval=_matmul),
]
