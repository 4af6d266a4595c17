"""Passes: the target's parametrised layers taken out as :class:`models.layers.TargetLayer` (in
graph order, with their input's sign from :mod:`models.trace.check`), a BatchNorm after a layer
folded into it, and the folded target holding the layers' tensors (the target's own storage where
nothing was folded, cast to float64 a layer at a time)."""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

from ..errors import UnsupportedModelError
from ..fxgraph import CastLayer, where
from ..layers import GroupedLinear, TargetLayer
from ..rules import rule_for
from .affine import BN_MODULES, PARAM_MODULES
from .fold import conv_padding, fold_bn, held


def _reshaped_from(arg: Any, source: fx.Node) -> bool:
    """Whether ``arg`` is ``source`` or ``source`` rearranged (GPT-2 reads ``input_ids.view(-1, T)``)."""
    while isinstance(arg, fx.Node) and arg is not source:
        rule = rule_for(arg) if arg.op in ("call_function", "call_method") else None
        if rule is None or not rule.rearranges:
            return False
        arg = arg.args[0]
    return arg is source


def _embedding(node: fx.Node, sub: nn.Embedding, state) -> TargetLayer:
    if sub.max_norm is not None:
        raise UnsupportedModelError(f"Embedding {node.target!r} has max_norm={sub.max_norm} (it renormalises "
                                    f"rows at lookup, not a linear map) ({where(node)})")
    placeholder = next(n for n in node.graph.nodes if n.op == "placeholder")
    reads_input = _reshaped_from(node.args[0], placeholder)
    if not reads_input and state.dependent[node.args[0]]:
        raise UnsupportedModelError(f"Embedding {node.target!r} must read the target's input (token ids, "
                                    f"reshaped or not) or constant ids (positions) ({where(node)})")
    # a linear map of the one-hot token: weight (dim, vocab), input >= 0
    return TargetLayer(name=node.target, kind="embedding", weight=sub.weight.detach().T, bias=None,
                       input_nonneg=True, sources=[f"{node.target}.weight"], reads_input=reads_input)


def _layer(node: fx.Node, sub: nn.Module, state) -> TargetLayer:
    arg = node.args[0]
    layer = TargetLayer(
        name=node.target,
        kind="conv2d" if isinstance(sub, nn.Conv2d) else "linear",
        weight=sub.weight.detach(),  # float64 already (the traced copy), not copied again
        bias=None if sub.bias is None else sub.bias.detach(),
        input_nonneg=state.nonneg.get(arg, False) if isinstance(arg, fx.Node) else False,
    )
    if layer.kind == "conv2d":
        layer.conv = {"stride": tuple(sub.stride), "padding": conv_padding(sub, node.target),
                      "dilation": tuple(sub.dilation), "groups": int(sub.groups)}
    elif isinstance(sub, GroupedLinear):
        layer.conv = {"groups": sub.groups}
    layer.sources = state.sources.get(node.target) or [f"{node.target}.{p}" for p, _ in sub.named_parameters()]
    return layer


def extract_layers(gm: fx.GraphModule, state) -> None:
    """``state.layers``: every parametrised layer in graph order, BatchNorm folded in."""
    modules = dict(gm.named_modules())
    by_name: dict[str, TargetLayer] = {}
    for node in gm.graph.nodes:
        sub = modules.get(node.target) if node.op == "call_module" else None
        if isinstance(sub, nn.Embedding):
            by_name[node.target] = _embedding(node, sub, state)
        elif isinstance(sub, PARAM_MODULES):
            by_name[node.target] = _layer(node, sub, state)
        elif isinstance(sub, BN_MODULES):
            src = node.args[0]
            if not (isinstance(src, fx.Node) and src.op == "call_module" and src.target in by_name
                    and len(src.users) == 1):
                raise UnsupportedModelError(
                    f"BatchNorm {node.target!r} must directly follow a Linear/Conv2d whose output it alone "
                    f"uses, so it can be folded ({where(node)})")
            layer = by_name[src.target]
            layer.weight, layer.bias = fold_bn(layer, sub, node.target)
            layer.folded_bn = node.target
    if not by_name:
        raise UnsupportedModelError("the target has no Linear or Conv2d layer: nothing to construct")
    state.layers = list(by_name.values())


def _folded_module(layer: TargetLayer) -> nn.Module:
    """The layer as a module holding the layer's own tensors (one tensor with the layer, tied: one)."""
    if layer.kind == "embedding":
        new = nn.Embedding(layer.d_in, layer.d_out, device="meta")
        new.weight = nn.Parameter(layer.weight.T, requires_grad=False)
        return new
    if layer.kind == "linear" and layer.groups > 1:
        new = GroupedLinear(torch.empty(layer.weight.shape, device="meta"), None, layer.groups)
    elif layer.kind == "linear":
        new = nn.Linear(layer.d_in, layer.d_out, bias=False, device="meta")
    else:
        new = nn.Conv2d(layer.in_channels, layer.d_out, layer.kernel, stride=layer.conv["stride"],
                        padding=layer.conv["padding"], dilation=layer.conv["dilation"], groups=layer.groups,
                        bias=False, device="meta")
    new.weight = nn.Parameter(layer.weight, requires_grad=False)
    new.bias = None if layer.bias is None else nn.Parameter(layer.bias, requires_grad=False)
    return new


def fold_target(gm: fx.GraphModule, state) -> None:
    """The folded target computes with the folded parameters: each layer's module replaced by one
    holding the layer's tensors (the target's own where nothing was folded), in float64 whatever the
    tensor's own dtype (cast a layer at a time, at each call); folded BatchNorms become Identity."""
    own = dict(state.target.named_parameters(remove_duplicate=False))  # tied: under every name
    for layer in state.layers:
        if layer.folded_bn is None:  # the target's own tensor, not a float64 copy of it
            layer.weight = held(layer.weight, [own[s] for s in layer.sources if s in own])
        new = _folded_module(layer)
        gm.set_submodule(layer.name, new if layer.weight.dtype == torch.float64 else CastLayer(new, torch.float64))
        if layer.folded_bn:
            gm.set_submodule(layer.folded_bn, nn.Identity())
    gm.recompile()
