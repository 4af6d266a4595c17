"""Pass: every node of the traced graph is checked against its op rule (:mod:`models.rules`) and
its sign found: whether its value is >= 0 on the whole input domain (a layer reading a
non-negative input needs one subset-sum problem per weight instead of two).

Layers (Linear, Conv2d, diagonal layers, BatchNorm, Embedding) output signed values; nodes that
depend on no input (shape arithmetic, an attention mask of ones, position ids) are constants of
the graph, kept as they are. Anything else without a rule is refused with the op and where it is.
"""

from __future__ import annotations

from typing import Any

import torch.fx as fx
import torch.nn as nn

from ..errors import UnsupportedModelError
from ..fxgraph import data_dependent, where
from ..rules import call_for
from .affine import BN_MODULES, PARAM_MODULES

LAYER_MODULES = (*PARAM_MODULES, *BN_MODULES, nn.Embedding)
LAYERS_DOC = ("Linear, Conv1d/Conv2d (any groups), BatchNorm1d/2d, LayerNorm, GroupNorm, PReLU, Embedding, "
              "MultiheadAttention (batch_first, no masks), TransformerEncoder(Layer)")


def _of_parameters_alone(gm: fx.GraphModule, node: fx.Node) -> str:
    """For an unsupported node that no input reaches, what it computes from: parameters and buffers
    alone (Swin V2's continuous position bias is an MLP of a coordinate buffer, gathered by an index
    buffer); '' where the input reaches it. Only asked when refusing (a pass over the graph)."""
    if data_dependent(gm, lambda m: False).get(node, True):  # a layer's output alone is not the input's
        return ""
    seen, stack, sources = set(), list(node.all_input_nodes), []
    while stack:
        a = stack.pop()
        if a in seen:
            continue
        seen.add(a)
        if a.op == "get_attr" or (a.op == "call_module" and any(True for _ in gm.get_submodule(a.target).parameters())):
            sources.append(str(a.target))
        stack.extend(a.all_input_nodes)
    return (f": no input reaches it, it computes a constant from the parameters and buffers {sorted(sources)}; there "
            f"is no rule for a function of parameters alone (the parameters it reads would be target weights of "
            f"an op the construction cannot see into)")


def _unsupported(gm: fx.GraphModule, node: fx.Node, modules: dict[str, nn.Module]) -> UnsupportedModelError:
    if node.op == "call_module":
        return UnsupportedModelError(
            f"unsupported module {type(modules[node.target]).__name__} {node.target!r} ({where(node)}); supported: "
            f"{LAYERS_DOC}, and the parameter-free ops of docs/supported-ops.md (`python -m models.rules`)")
    if node.op == "call_method":
        return UnsupportedModelError(f"unsupported tensor method .{node.target}() ({where(node)})")
    return UnsupportedModelError(f"unsupported function {getattr(node.target, '__name__', node.target)} "
                                 f"({where(node)}){_of_parameters_alone(gm, node)}")


def _direct_tensor(gm: fx.GraphModule, node: fx.Node) -> UnsupportedModelError:
    """A parameter the affine passes did not take in: gathered by an index buffer, or used directly."""
    buffers = {name for name, _ in gm.named_buffers()}
    # a parameter read with a buffer beside it: indexed by it (table[index]) or handed with it to a
    # function (torchvision's wrapped _get_relative_position_bias(table, index, window))
    gathers = [u for u in node.users if u.op == "call_function"
               and any(isinstance(a, fx.Node) and a.op == "get_attr" and a.target in buffers for a in u.args)]
    if gathers:  # e.g. Swin's relative position bias: table[relative_position_index]
        return UnsupportedModelError(
            f"parameter {node.target!r} is read through an index buffer ({where(gathers[0])}): a gathered "
            f"table, as Swin's relative position bias; there is no rule for a gathered parameter yet (it "
            f"would construct the table's entries as target weights and gather them by the same index)")
    return UnsupportedModelError(
        f"the target uses the tensor {node.target!r} directly ({where(node)}); supported: a parameter that "
        f"multiplies or is added to an activation and varies along one dimension (a per-channel scale or "
        f"shift) or is a (1, T, D) position table, a learned token concatenated to the input, and the weight "
        f"and bias of layer_norm / group_norm")


def check_ops(gm: fx.GraphModule, state) -> None:
    """Check every node; sets ``state.nonneg`` (node -> output >= 0) and ``state.dependent``."""
    modules = dict(gm.named_modules())
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise UnsupportedModelError(f"the target must take exactly one input tensor; its forward takes {len(placeholders)}")
    nonneg: dict[fx.Node, bool] = {}

    def arg_nonneg(a: Any) -> bool:
        if isinstance(a, fx.Node):
            return nonneg.get(a, False)
        return isinstance(a, (int, float)) and a >= 0

    dependent = data_dependent(gm, lambda m: isinstance(m, LAYER_MODULES))
    parameters = {name for name, _ in gm.named_parameters()}
    for node in gm.graph.nodes:
        if node.op in ("call_function", "call_method") and not dependent[node]:
            continue  # shape arithmetic or a constant of the graph (mask of ones, position ids): kept as it is
        if node.op == "get_attr" and node.target not in parameters:
            continue  # a buffer: a constant
        if node.op == "placeholder":
            nonneg[node] = state.input_nonneg
        elif node.op == "output":
            continue
        elif node.op == "get_attr":
            raise _direct_tensor(gm, node)
        elif node.op == "call_module" and isinstance(modules[node.target], LAYER_MODULES):
            nonneg[node] = False  # a layer's output (checked where layers are taken out)
        else:
            call = call_for(node, modules, dependent)
            if call is None:
                raise _unsupported(gm, node, modules)
            why = call.rule.check(call)
            if why:
                raise UnsupportedModelError(f"{call.rule.name}: {why} ({where(node)})")
            nonneg[node] = call.rule.sign(call, arg_nonneg)
    state.nonneg, state.dependent = nonneg, dependent
