"""Passes: the elementwise affine parameters of the graph become diagonal layers
(:class:`models.layers.GroupedLinear`), so each gets a pair like any other layer.

* F.layer_norm / F.group_norm with weight or bias: the parameter-free normalisation, then
  ``x * weight + bias`` per feature (a LayerNorm module kept whole by another tracer is first
  written as its functional form);
* a BatchNorm that does not directly follow a Linear / Conv2d (so cannot be folded): its
  per-channel affine map;
* PReLU: relu(x) - a relu(-x), the slope a diagonal layer on relu(-x);
* a tensor multiplied or added by a parameter with one non-broadcast dimension (layer scale, a
  learned per-channel shift) or a (1, T, D) position table;
* a learned token (a parameter expanded over the batch and concatenated: class tokens): a diagonal
  pair with weight 0 on a slice of the input and the token as its bias.

``state.sources`` gets, per new layer, the target parameters it replaces. A normalisation module
traced into gives its name to its diagonal layer; other parameters give theirs + "_affine".
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UnsupportedModelError
from ..fxgraph import where
from ..layers import GroupedLinear, TargetLayer
from .fold import fold_bn
from .frontend import TRACED_THROUGH

PARAM_MODULES = (nn.Linear, nn.Conv2d, GroupedLinear)
BN_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d)


def diag_node(gm: fx.GraphModule, after: fx.Node, x: fx.Node, name: str, weight: torch.Tensor,
               bias: torch.Tensor | None, dim: int = -1) -> fx.Node:
    """Insert ``x * weight + bias`` along ``dim`` (a diagonal :class:`GroupedLinear` named ``name``) after
    ``after``; off the last dimension the features are moved last and back (torch.movedim)."""
    graph = gm.graph
    if name in dict(gm.named_modules()):
        gm.delete_submodule(name)
    gm.add_submodule(name, GroupedLinear(weight.reshape(-1, 1), bias, groups=weight.numel()))
    with graph.inserting_after(after):
        src = graph.call_function(torch.movedim, (x, dim, -1)) if dim != -1 else x
    with graph.inserting_after(src if dim != -1 else after):
        out = graph.call_module(name, (src,))
    if dim == -1:
        return out
    with graph.inserting_after(out):
        return graph.call_function(torch.movedim, (out, -1, dim))


def param_value(gm: fx.GraphModule, node: Any) -> torch.Tensor | None:
    """The float64 value of the parameter a get_attr node reads (None for anything else)."""
    is_param = isinstance(node, fx.Node) and node.op == "get_attr" and \
        node.target in {name for name, _ in gm.named_parameters()}
    return gm.get_parameter(node.target).detach().double() if is_param else None


def free_name(gm: fx.GraphModule, base: str, called: set[str]) -> str:
    """``base`` when no call in the graph uses a module of that name and it names no parameter or
    buffer (a module traced into, e.g. a LayerNorm, is replaced), else base_affine, base_affine2, ..."""
    tensors = {n for n, _ in gm.named_parameters()} | {n for n, _ in gm.named_buffers()}
    name, i = base, 1
    while name in called or name in tensors:
        name = f"{base}_affine" + (str(i) if i > 1 else "")
        i += 1
    called.add(name)
    return name



def called_modules(gm: fx.GraphModule) -> set[str]:
    return {n.target for n in gm.graph.nodes if n.op == "call_module"}


def _arg(node: fx.Node, i: int, key: str, default: Any = None) -> Any:
    return node.args[i] if len(node.args) > i else node.kwargs.get(key, default)


def replace_node(gm: fx.GraphModule, node: fx.Node, out: fx.Node) -> None:
    node.replace_all_uses_with(out)
    gm.graph.erase_node(node)


def layer_norm_modules(gm: fx.GraphModule, state) -> None:
    """A LayerNorm module kept whole (another tracer's leaf) as its functional form."""
    graph = gm.graph
    modules = dict(gm.named_modules())
    for node in list(graph.nodes):
        ln = modules.get(node.target) if node.op == "call_module" else None
        if type(ln) is nn.LayerNorm:
            with graph.inserting_before(node):
                weight, bias = [graph.get_attr(f"{node.target}.{p}") if getattr(ln, p) is not None else None
                                for p in ("weight", "bias")]
                fn = graph.call_function(F.layer_norm, (node.args[0], tuple(ln.normalized_shape), weight, bias, ln.eps))
            replace_node(gm, node, fn)
    gm.recompile()


def norm_affine(gm: fx.GraphModule, state) -> None:
    """layer_norm / group_norm with a parameter weight or bias: plain normalisation, then a diagonal layer."""
    graph = gm.graph
    owners = dict(state.module.named_modules())
    called = called_modules(gm)
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in (F.layer_norm, F.group_norm):
            continue
        w_node, b_node = _arg(node, 2, "weight"), _arg(node, 3, "bias")
        params = [p for p in (w_node, b_node) if isinstance(p, fx.Node)]
        if not params or any(p.op != "get_attr" for p in params):
            continue
        x, size = node.args[0], node.args[1]
        if node.target is F.layer_norm and len(tuple(size)) != 1:
            raise UnsupportedModelError(
                f"layer_norm over {len(tuple(size))} dimensions {tuple(size)} with an affine weight: only the "
                f"last dimension's is supported ({where(node)})")
        weight, bias = param_value(gm, w_node), param_value(gm, b_node)
        d = (weight if weight is not None else bias).numel()
        weight = torch.ones(d, dtype=torch.float64) if weight is None else weight
        eps = _arg(node, 4, "eps", 1e-5)
        with graph.inserting_before(node):
            plain = graph.call_function(node.target, (x, size, None, None, eps))
        owner = params[0].target.rsplit(".", 1)[0] if "." in params[0].target else ""
        own = owners.get(owner) if owner else None
        name = free_name(gm, owner if isinstance(own, TRACED_THROUGH) else params[0].target + "_affine", called)
        out = diag_node(gm, plain, plain, name, weight, bias, dim=-1 if node.target is F.layer_norm else 1)
        state.sources[name] = [p.target for p in params]
        replace_node(gm, node, out)
    gm.recompile()


def unfoldable_batchnorm(gm: fx.GraphModule, state) -> None:
    """A BatchNorm not right after a Linear / Conv2d whose output it alone reads: its affine map."""
    modules = dict(gm.named_modules())
    called = called_modules(gm)
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), BN_MODULES):
            continue
        src = node.args[0]
        if (isinstance(src, fx.Node) and src.op == "call_module"
                and isinstance(modules.get(src.target), PARAM_MODULES) and len(src.users) == 1):
            continue  # folded into the layer later
        bn = modules[node.target]
        layer = TargetLayer(node.target, "linear", torch.eye(bn.num_features, dtype=torch.float64), None, False)
        weight, bias = fold_bn(layer, bn, node.target)
        name = free_name(gm, node.target, called - {node.target})
        out = diag_node(gm, node, node.args[0], name, torch.diagonal(weight).clone(), bias, dim=1)
        state.sources[name] = [f"{node.target}.{p}" for p, _ in bn.named_parameters()]
        replace_node(gm, node, out)
    gm.recompile()


def prelu(gm: fx.GraphModule, state) -> None:
    """prelu(x) = relu(x) - a relu(-x): a per-channel (or single) weight times an activation."""
    graph = gm.graph
    modules = dict(gm.named_modules())
    called = called_modules(gm)
    for node in list(graph.nodes):
        is_module = node.op == "call_module" and isinstance(modules.get(node.target), nn.PReLU)
        if not (is_module or (node.op == "call_function" and node.target is F.prelu)):
            continue
        if is_module:
            x, a, source = node.args[0], modules[node.target].weight.detach().double(), f"{node.target}.weight"
        else:
            x, a, source = node.args[0], param_value(gm, _arg(node, 1, "weight")), getattr(_arg(node, 1, "weight"), "target", None)
            if a is None:
                raise UnsupportedModelError(f"prelu's weight must be a parameter ({where(node)})")
        name = free_name(gm, node.target if is_module else source + "_affine", called - {node.target})
        with graph.inserting_before(node):
            pos = graph.call_function(torch.relu, (x,))
            neg = graph.call_function(torch.relu, (graph.call_function(operator.neg, (x,)),))
            single = graph.call_function(torch.unsqueeze, (neg, -1)) if a.numel() == 1 else neg
        scaled = diag_node(gm, single, single, name, a.reshape(-1), None, dim=-1 if a.numel() == 1 else 1)
        with graph.inserting_after(scaled):
            if a.numel() == 1:
                scaled = graph.call_function(torch.squeeze, (scaled, -1))
        with graph.inserting_after(scaled):
            out = graph.call_function(operator.sub, (pos, scaled))
        state.sources[name] = [source]
        replace_node(gm, node, out)
    gm.recompile()
