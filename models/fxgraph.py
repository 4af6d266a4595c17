"""Graph utilities shared by the tracer, the verification and the bounds: copies of a traced graph
with some modules replaced, views computing in another dtype, which nodes depend on the input, and
where a node came from."""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn


def with_modules(gm: fx.GraphModule, modules: dict[str, nn.Module]) -> fx.GraphModule:
    """A copy of ``gm`` with the submodules named in ``modules`` replaced by the given ones. The
    replaced submodules are not copied first (a deep copy would duplicate every layer's weights
    only to drop them: for a 100M-weight target, 800 MB in float64); everything else is."""
    memo = {id(gm.get_submodule(name)): gm.get_submodule(name) for name in modules}
    out = copy.deepcopy(gm, memo)
    for name, module in modules.items():
        out.set_submodule(name, module)
    out.recompile()
    return out


class CastLayer(nn.Module):
    """A layer computing in ``dtype`` from its own parameters and buffers cast at each call (one
    layer's worth at a time), not from a copy of them: what :func:`cast_layers` puts in place."""

    def __init__(self, layer: nn.Module, dtype: torch.dtype):
        super().__init__()
        object.__setattr__(self, "_layer", layer)  # not a submodule: ``.to()`` of the network leaves it alone
        self.dtype = dtype

    def cast(self) -> dict[str, torch.Tensor]:
        """The layer's tensors in ``dtype``; within :func:`models.pruned.fixed_masks` formed once while
        its byte allowance lasts (as the materialised network's weight * mask products are)."""
        products = getattr(self, "_products", None)
        if products is not None and "cast" in products:
            return products["cast"]
        tensors = {name: t.detach().to(self.dtype) if t is not None and t.is_floating_point() else t
                   for name, t in (*self._layer.named_parameters(), *self._layer.named_buffers())}
        if products is not None:
            size = sum(t.numel() * t.element_size() for t in tensors.values() if t is not None)
            if size <= self._allowance[0]:
                products["cast"] = tensors
                self._allowance[0] -= size
        return tensors

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(self._layer, self.cast(), (x.to(self.dtype) if x.is_floating_point() else x,))


def cast_layers(gm: fx.GraphModule, names: list[str], dtype: torch.dtype) -> fx.GraphModule:
    """``gm`` computing in ``dtype`` (eval mode): the layers named cast their tensors at each call
    (:class:`CastLayer`), the rest (normalisation, tables: small) copied in ``dtype``. A float32 view
    of a float64 network costs one layer's cast, not a float32 copy of every weight."""
    def held(name: str) -> nn.Module:  # a layer the folded target already casts: its own module
        m = gm.get_submodule(name)
        return m._layer if isinstance(m, CastLayer) else m

    out = with_modules(gm, {name: CastLayer(held(name), dtype) for name in names}).to(dtype).eval()
    # constants of the graph (an attention mask filled with float64's min) are computed as the float64
    # network computes them, then cast where they meet the activations
    dependent = data_dependent(out, lambda m: isinstance(m, CastLayer))
    for node in list(out.graph.nodes):
        users = [u for u in node.users if dependent.get(u)]
        if dependent.get(node, True) or node.op in ("get_attr", "placeholder") or not users:
            continue
        with out.graph.inserting_after(node):
            cast = out.graph.call_function(cast_constant, (node, dtype))
        for u in users:
            u.replace_input_with(node, cast)
    out.recompile()
    return out


def cast_constant(value: Any, dtype: torch.dtype) -> Any:
    """A constant of the graph in ``dtype`` where it is a floating tensor (shapes, ids, masks of bools pass)."""
    return value.to(dtype) if isinstance(value, torch.Tensor) and value.is_floating_point() else value


SHAPE_QUERIES = ("size", "dim")  # tensor methods whose value is a shape, not data


def data_dependent(gm: fx.GraphModule, is_layer) -> dict[fx.Node, bool]:
    """Per node, whether its value depends on the input's values (not only on its shape): the
    placeholder and every layer output (``is_layer(module)``: it carries the pair's error) do, shape
    queries and buffers do not, any other node does where one of its inputs does. The others are
    constants of the graph (an attention mask of ones, position ids): computed alike by the target
    and the pruned network, kept as they are, and exact in the certified bound."""
    dep: dict[fx.Node, bool] = {}
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            dep[node] = True
        elif node.op == "get_attr":
            dep[node] = False
        elif node.op == "call_method" and node.target in SHAPE_QUERIES:
            dep[node] = False
        elif node.op == "call_function" and node.target is getattr:
            dep[node] = False
        elif node.op == "call_module" and is_layer(gm.get_submodule(node.target)):
            dep[node] = True
        else:
            dep[node] = any(dep.get(a, False) for a in node.all_input_nodes)
    return dep



def where(node: fx.Node) -> str:
    """The node, its op and target, and the source line it was traced from (for error messages)."""
    stack = node.meta.get("stack_trace")
    target = node.target
    if callable(target):  # a function by its qualified name, not its repr (which holds an address)
        module = getattr(target, "__module__", None) or ""
        target = f"{module + '.' if module else ''}{getattr(target, '__qualname__', getattr(target, '__name__', target))}"
    else:
        target = repr(target)
    return f"node {node.name!r} ({node.op} {target})" + (f" at {stack.strip().splitlines()[-1]}" if stack else "")

