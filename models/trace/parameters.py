"""Passes: parameters that enter the graph elementwise become diagonal layers (see
:mod:`models.trace.affine`): a scale or shift varying along one dimension (layer scale, a learned
per-channel shift) or a (1, T, D) position table, and learned tokens concatenated to the input."""

from __future__ import annotations

import operator

import torch
import torch.fx as fx

from ..errors import UnsupportedModelError
from ..fxgraph import where
from .affine import called_modules, replace_node, diag_node, free_name, param_value

_SCALE_OR_SHIFT = (operator.mul, torch.mul, operator.add, torch.add, "mul", "add")


def _scale_or_shift(node: fx.Node) -> bool:
    return node.op in ("call_function", "call_method") and node.target in _SCALE_OR_SHIFT and len(node.args) == 2


def parameter_affine(gm: fx.GraphModule, state) -> None:
    """activation * p or activation + p for a parameter p: a diagonal layer (weight p, or bias p)."""
    graph = gm.graph
    called = called_modules(gm)
    for node in list(graph.nodes):
        if not _scale_or_shift(node):
            continue
        params = [a for a in node.args if isinstance(a, fx.Node) and a.op == "get_attr"]
        others = [a for a in node.args if a not in params]
        if len(params) != 1 or len(others) != 1 or not isinstance(others[0], fx.Node):
            continue
        value = param_value(gm, params[0])
        if value is None:
            continue
        big = [i for i, s in enumerate(value.shape) if s != 1]
        scale = "mul" in getattr(node.target, "__name__", str(node.target))
        # a (1, T, D) position table: the last dimensions, and a leading 1 that broadcasts over the batch
        trailing = bool(big) and big[0] >= 1 and big == list(range(big[0], value.dim()))
        if len(big) != 1 and not trailing:
            raise UnsupportedModelError(
                f"parameter {params[0].target!r} of shape {tuple(value.shape)} {'multiplies' if scale else 'is added to'} "
                f"an activation; a parameter entering elementwise must vary along one dimension (a per-channel "
                f"scale or shift) or along the last dimensions after a leading 1 (a (1, T, D) position table) to "
                f"become a diagonal pair ({where(node)})")
        vec = value.reshape(-1)
        weight, bias = (vec, None) if scale else (torch.ones_like(vec), vec)
        name = free_name(gm, params[0].target + "_affine", called)
        if len(big) == 1:
            out = diag_node(gm, node, others[0], name, weight, bias, dim=big[0] - value.dim())
        else:  # flatten the table's dimensions into one feature dimension and back
            core = tuple(value.shape[big[0]:])
            with graph.inserting_after(node):
                flat = graph.call_function(torch.flatten, (others[0], -len(core)))
            diag = diag_node(gm, flat, flat, name, weight, bias)
            with graph.inserting_after(diag):
                out = graph.call_function(torch.unflatten, (diag, -1, core))
        state.sources[name] = [params[0].target]
        replace_node(gm, node, out)
    gm.recompile()


def learned_tokens(gm: fx.GraphModule, state) -> None:
    """A parameter broadcast over the batch and concatenated (a class token): what a diagonal pair with
    weight 0 and bias p computes on any input shaped like it (a slice of another part of the cat),
    constant units as for any bias."""
    graph = gm.graph
    called = called_modules(gm)
    for node in list(graph.nodes):
        if node.op != "get_attr" or len(node.users) != 1:
            continue
        expand = next(iter(node.users))
        cat = next(iter(expand.users)) if len(expand.users) == 1 else None
        if not (expand.op == "call_method" and expand.target == "expand" and cat is not None
                and cat.op == "call_function" and cat.target is torch.cat):
            continue
        dim = cat.kwargs.get("dim", cat.args[1] if len(cat.args) > 1 else 0)
        others = [t for t in cat.args[0] if t is not expand]
        value = param_value(gm, node)
        if value is None or not others or not isinstance(dim, int) or dim < 1 or value.shape[0] != 1:
            continue
        index = (slice(None),) * dim + (slice(0, value.shape[dim]),)
        with graph.inserting_before(expand):
            part = graph.call_function(operator.getitem, (others[0], index))
        name = free_name(gm, node.target + "_affine", called)
        core = tuple(value.shape[1:])
        with graph.inserting_after(part):
            flat = graph.call_function(torch.flatten, (part, 1))
        diag = diag_node(gm, flat, flat, name, torch.zeros(value.numel(), dtype=torch.float64), value.reshape(-1))
        with graph.inserting_after(diag):
            out = graph.call_function(torch.unflatten, (diag, 1, core))
        state.sources[name] = [node.target]
        replace_node(gm, expand, out)
    gm.recompile()


def drop_unused_attributes(gm: fx.GraphModule, state) -> None:
    """get_attr nodes no longer read (the parameters now held by diagonal layers)."""
    for node in list(gm.graph.nodes):
        if node.op == "get_attr" and not node.users:
            gm.graph.erase_node(node)
    gm.recompile()
