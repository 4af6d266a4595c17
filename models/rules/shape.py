"""Rules of the ops that move, select, split, join or average entries: reshapes, indexing, cat,
chunk / split, permutes, dropout / identity, mean and pooling.

Every one must keep the batch dimension (dim 0) apart: the certified bound stacks (lo, hi, delta)
along it and runs these ops on the stack unchanged, which is sound because each moves, selects or
sums the entries of every part alike (max pooling: |max a - max b| <= max |a - b|).
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from .base import Call, Rule


def _flatten_check(call: Call) -> str | None:
    start = call.module.start_dim if call.module is not None else call.arg(1, "start_dim", 0)
    if start == 0:
        return "flatten from dim 0 would merge the batch dimension; flatten from dim 1 (torch.flatten(x, 1))"
    return None


def _dim_not_batch(position: int, default=None, many: bool = False, key: str = "dim"):
    """A check that the op's ``key`` argument (at ``position``), a dim or with ``many`` a list of
    them, names constants other than 0."""
    def check(call: Call) -> str | None:
        dim = call.arg(position, key, default)
        dims = dim if many and isinstance(dim, (tuple, list)) else (dim,)
        if any(d is None or d == 0 or isinstance(d, fx.Node) for d in dims):
            return (f"{call.rule.name} over {key} {dim!r} would mix the batch dimension (dim 0) in; name constant "
                    f"dims >= 1")
        return None
    return check


def _getitem_check(call: Call) -> str | None:
    from . import rule_for  # the registry: whether the indexed value is a tuple of tensors

    src, index = call.node.args[0], call.node.args[1]
    if isinstance(src, fx.Node) and isinstance(index, int):
        rule = rule_for(src)
        if rule is not None and rule.returns_tuple:
            return None  # one part of a chunk / split
    first = index[0] if isinstance(index, tuple) and index else index
    inner = index if isinstance(index, tuple) else (index,)
    if first != slice(None) or any(isinstance(i, fx.Node) for i in inner):
        return f"indexing must keep the batch dimension whole and use constant indices (x[:, ...]); got {index!r}"
    return None


def _transpose_check(call: Call) -> str | None:
    args = list(call.node.args) + list(call.node.kwargs.values())
    if any(a == 0 for a in args[1:3]):
        return f"{call.rule.name} of dim 0 (the batch dimension)"
    return None


def _permute_check(call: Call) -> str | None:
    args = list(call.node.args) + list(call.node.kwargs.values())
    dims = args[1] if len(args) == 2 and isinstance(args[1], (tuple, list)) else args[1:]
    if not dims or dims[0] != 0:
        return f"permute must keep the batch dimension first; got {tuple(dims)}"
    return None


_ROLL_DIMS = _dim_not_batch(2, many=True, key="dims")


def _roll_check(call: Call) -> str | None:
    shifts = call.arg(1, "shifts")
    if any(isinstance(s, fx.Node) for s in (shifts if isinstance(shifts, (tuple, list)) else (shifts,))):
        return "roll by shifts computed from activations (only constant shifts)"
    return _ROLL_DIMS(call)


def _cat_sign(call: Call, nonneg) -> bool:
    return all(nonneg(a) for a in call.node.args[0])


def _maxpool_relaxation(call: Call):
    """Non-overlapping square windows (kernel = stride, no padding, dilation or ceil): the relaxation's
    max pooling; anything else is not a chain op."""
    mod = call.module
    if mod is None:
        return None
    k, s = mod.kernel_size, mod.stride if mod.stride is not None else mod.kernel_size
    k2, s2 = (k, k) if isinstance(k, int) else tuple(k), (s, s) if isinstance(s, int) else tuple(s)
    if k2 == s2 and k2[0] == k2[1] and mod.padding in (0, (0, 0)) and mod.dilation in (1, (1, 1)) and not mod.ceil_mode:
        return "maxpool", k2[0]
    return None


RULES = [
    Rule("flatten", "flatten from dim 1 or later", (torch.flatten,), ("flatten",), (nn.Flatten,), check=_flatten_check,
         relaxation="permuting", rearranges=True),
    Rule("view", ".view() / .reshape() / torch.reshape (the batch dimension kept by the model)", (torch.reshape,),
         ("view", "reshape"), relaxation="permuting", rearranges=True),
    Rule("contiguous", ".contiguous()", (), ("contiguous",), relaxation="permuting", rearranges=True),
    Rule("unsqueeze", "unsqueeze / squeeze of a named dim other than 0", (torch.unsqueeze, torch.squeeze),
         ("unsqueeze", "squeeze"), check=_dim_not_batch(1), relaxation="permuting", rearranges=True),
    Rule("unflatten", "unflatten of a dim other than 0", (torch.unflatten,), ("unflatten",),
         check=_dim_not_batch(1)),
    Rule("getitem", "x[:, ...] with constant indices; a part of chunk / split", (operator.getitem,),
         check=_getitem_check),
    Rule("cat", "cat along dims >= 1", (torch.cat,), check=_dim_not_batch(1), sign=_cat_sign),
    Rule("chunk", "chunk / split along dims >= 1", (torch.chunk, torch.split), ("chunk", "split"),
         check=_dim_not_batch(2, default=0), returns_tuple=True),
    Rule("permute", "permute keeping dim 0 first", (torch.permute,), ("permute",), check=_permute_check),
    Rule("transpose", "transpose / movedim of dims other than 0", (torch.transpose, torch.movedim),
         ("transpose", "movedim"), check=_transpose_check),
    Rule("roll", "roll by constant shifts along named dims >= 1 (Swin's shifted windows)", (torch.roll,), ("roll",),
         check=_roll_check, relaxation="permuting"),
    Rule("mean", "mean over dims >= 1", (torch.mean,), ("mean",), check=_dim_not_batch(1, many=True)),
    Rule("dropout", "Dropout (the identity in eval mode)", (F.dropout,), (), (nn.Dropout,), relaxation="permuting"),
    Rule("identity", "Identity", (), (), (nn.Identity,), relaxation="permuting"),
    Rule("max_pool2d", "max pooling (2-D)", (F.max_pool2d,), (), (nn.MaxPool2d,), relaxation=_maxpool_relaxation),
    Rule("avg_pool2d", "average pooling (2-D)", (F.avg_pool2d,), (), (nn.AvgPool2d,), relaxation="linear"),
    Rule("adaptive_avg_pool2d", "adaptive average pooling (2-D)", (F.adaptive_avg_pool2d,), (),
         (nn.AdaptiveAvgPool2d,), relaxation="linear"),
    Rule("adaptive_max_pool2d", "adaptive max pooling (2-D)", (F.adaptive_max_pool2d,), (), (nn.AdaptiveMaxPool2d,)),
]
