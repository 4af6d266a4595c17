"""Tracing a target network with torch.fx: supported ops, BatchNorm folding, sign analysis.

The target becomes a GraphModule whose parametrised layers are Linear and Conv2d (BatchNorm in
eval mode folded into the layer before it) and whose other nodes are
parameter-free ops that the construction leaves in place: ReLU, max/avg pooling, flatten and
reshapes, dropout/identity, additions (residuals), slicing and padding, cat, transpose/permute,
mean, differences, products and division by a constant - every one keeping the batch dimension
(dim 0) apart, which the certified bound's stacking relies on. Elementwise activations and softmax with a bound rule
(:mod:`models.ops`: ReLU6, LeakyReLU, Sigmoid, Hardsigmoid, Tanh, Hardtanh, ELU, Softplus, SiLU,
GELU, Hardswish, Mish) and adaptive pooling are kept too. Anything else is refused with the op's
name and where it is in the graph.
"""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights

from .ops import elementwise, softmax_dim

PARAM_MODULES = (nn.Linear, nn.Conv2d)
BN_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d)
PASS_MODULES = (nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten,
                nn.Dropout, nn.Identity)
PASS_FUNCTIONS = {
    torch.relu: "relu", F.relu: "relu", operator.add: "add", torch.add: "add",
    torch.flatten: "flatten", F.max_pool2d: "max_pool2d", F.avg_pool2d: "avg_pool2d",
    F.adaptive_avg_pool2d: "adaptive_avg_pool2d", F.adaptive_max_pool2d: "adaptive_max_pool2d",
    F.dropout: "dropout", operator.getitem: "getitem", F.pad: "pad", torch.cat: "cat", operator.sub: "sub",
    torch.sub: "sub", operator.mul: "mul", torch.mul: "mul", operator.truediv: "div", torch.div: "div",
    operator.neg: "neg", torch.mean: "mean", torch.permute: "permute", torch.transpose: "transpose",
}
PASS_METHODS = {"relu", "flatten", "view", "reshape", "size", "add", "contiguous", "sub", "mul", "div", "mean",
                "permute", "transpose"}
SHAPE_ONLY = {"flatten", "view", "reshape", "contiguous", "dropout"}
#: functions on shape values (x.size(0) * 2, s[1], ...), never on activations
SHAPE_ARITHMETIC = (operator.getitem, operator.mul, operator.add, operator.sub, operator.floordiv, operator.truediv,
                    getattr)


def _sign(kind: str, node: fx.Node, arg_nonneg) -> bool:
    """Whether the op's output is >= 0 wherever its inputs' signs say so."""
    args = node.args
    if kind == "relu":
        return True
    if kind in ("add", "mul"):
        return all(arg_nonneg(a) for a in args[:2])
    if kind == "cat":
        return all(arg_nonneg(a) for a in args[0])
    if kind == "div":
        return arg_nonneg(args[0]) and arg_nonneg(args[1])
    if kind == "pad":
        value = node.kwargs.get("value", args[3] if len(args) > 3 else 0)
        return arg_nonneg(args[0]) and isinstance(value, (int, float)) and value >= 0
    if kind in ("sub", "neg"):
        return False
    return arg_nonneg(args[0])


def _batch_kept(node: fx.Node, kind: str) -> str | None:
    """Why an op would mix the batch dimension (dim 0) into others, or None: slicing must keep
    ``[:, ...]``, cat/mean/transpose must not name dim 0, permute must keep 0 first."""
    args = list(node.args) + list(node.kwargs.values())
    if kind == "getitem":
        index = node.args[1]
        first = index[0] if isinstance(index, tuple) and index else index
        inner = index if isinstance(index, tuple) else (index,)
        if first != slice(None) or any(isinstance(i, fx.Node) for i in inner):
            return f"indexing must keep the batch dimension whole and use constant indices (x[:, ...]); got {index!r}"
    if kind in ("cat", "mean"):
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
        dims = dim if isinstance(dim, (tuple, list)) else (dim,)
        if any(d == 0 or d is None or isinstance(d, fx.Node) for d in dims):
            return f"{kind} over dim {dim!r} would mix the batch dimension (dim 0) in; use dims >= 1"
    if kind == "transpose" and any(a == 0 for a in args[1:3]):
        return "transpose of dim 0 (the batch dimension)"
    if kind == "permute":
        dims = args[1] if len(args) == 2 and isinstance(args[1], (tuple, list)) else args[1:]
        if not dims or dims[0] != 0:
            return f"permute must keep the batch dimension first; got {tuple(dims)}"
    if kind == "pad":
        mode = node.kwargs.get("mode", node.args[2] if len(node.args) > 2 else "constant")
        if mode != "constant":
            return f"pad mode {mode!r}; only 'constant' has a bound rule here"
    if kind == "div":
        if len(node.args) > 1 and isinstance(node.args[1], fx.Node):
            return "division by an activation (only by a constant)"
    return None



class UnsupportedModelError(ValueError):
    """The target holds an op the construction cannot replace or keep."""


@dataclass
class TargetLayer:
    """One parametrised layer of the target (BatchNorm already folded in)."""

    name: str  # qualified module name in the traced graph, e.g. "fc1" or "features.0"
    kind: str  # "linear" or "conv2d"
    weight: torch.Tensor  # float64, (d_out, d_in) or (c_out, c_in, kh, kw)
    bias: torch.Tensor | None  # float64 (d_out,) or None
    input_nonneg: bool  # the layer's input is >= 0 on the whole input domain
    conv: dict[str, Any] = field(default_factory=dict)  # stride, padding, dilation
    folded_bn: str | None = None  # name of the BatchNorm folded into it

    @property
    def d_out(self) -> int:
        return int(self.weight.shape[0])

    @property
    def d_in(self) -> int:
        """Inputs per output: the weight's second dimension (in_channels / groups for a conv)."""
        return int(self.weight.shape[1])

    @property
    def groups(self) -> int:
        return int(self.conv.get("groups", 1))

    @property
    def in_channels(self) -> int:
        return self.d_in * self.groups

    @property
    def kernel(self) -> tuple[int, int]:
        return tuple(self.weight.shape[2:]) if self.kind == "conv2d" else (1, 1)

    def num_params(self) -> int:
        return self.weight.numel() + (self.bias.numel() if self.bias is not None else 0)

    def apply(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        """The layer's linear map with weight ``w`` (its own shape) and bias ``b`` applied to ``x``."""
        if self.kind == "linear":
            return F.linear(x, w, b)
        c = self.conv
        return F.conv2d(x, w, b, stride=c["stride"], padding=c["padding"], dilation=c["dilation"],
                        groups=c.get("groups", 1))


def _where(node: fx.Node) -> str:
    stack = node.meta.get("stack_trace")
    return f"node {node.name!r} ({node.op} {node.target!r})" + (f" at {stack.strip().splitlines()[-1]}" if stack else "")


def _conv_padding(conv: nn.Conv2d, name: str) -> tuple[int, int]:
    if conv.padding_mode != "zeros":
        raise UnsupportedModelError(f"Conv2d {name!r} uses padding_mode={conv.padding_mode!r}; only 'zeros' is supported")
    if conv.padding == "valid":
        return (0, 0)
    if conv.padding == "same":
        pads = []
        for k, d in zip(conv.kernel_size, conv.dilation):
            total = d * (k - 1)
            if total % 2:
                raise UnsupportedModelError(f"Conv2d {name!r}: padding='same' is asymmetric here; use explicit padding")
            pads.append(total // 2)
        return tuple(pads)
    return tuple(conv.padding)


def _fold_bn(layer: "TargetLayer", bn: nn.Module, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's weight and bias with an eval-mode BatchNorm after it folded in, in float64
    (torch.nn.utils.fusion: W' = W g / sqrt(var + eps), b' = (b - mean) g / sqrt(var + eps) + beta)."""
    if bn.running_mean is None or bn.running_var is None:
        raise UnsupportedModelError(f"BatchNorm {name!r} has no running statistics (track_running_stats=False); cannot fold it")
    bad = torch.flatten(torch.nonzero(bn.running_var.detach().double() + bn.eps <= 0))
    if bad.numel():
        i = int(bad[0])
        raise UnsupportedModelError(f"BatchNorm {name!r}: running_var[{i}] = {float(bn.running_var[i]):g} makes "
                                    f"var + eps <= 0 ({bad.numel()} channel(s)); a variance cannot be negative: a damaged "
                                    f"checkpoint?")
    stats = [bn.running_mean, bn.running_var, bn.eps,
             bn.weight if bn.weight is not None else torch.ones_like(bn.running_mean),
             bn.bias if bn.bias is not None else torch.zeros_like(bn.running_mean)]
    stats = [t.detach().double() if isinstance(t, torch.Tensor) else t for t in stats]
    if layer.kind == "linear":
        w, b = fuse_linear_bn_weights(layer.weight, layer.bias, *stats)
    else:
        w, b = fuse_conv_bn_weights(layer.weight, layer.bias, *stats)
    return w.detach(), b.detach()


def trace_target(module: nn.Module, input_nonneg: bool) -> tuple[fx.GraphModule, list[TargetLayer]]:
    """Trace ``module`` (eval mode), check every op, fold BatchNorm, find non-negative inputs.

    Returns the *folded* target (a float64 GraphModule computing the same function, BN replaced
    by Identity and folded into the layer before it) and its parametrised layers in graph order.
    """
    module = copy.deepcopy(module).eval().double()
    try:
        gm = fx.symbolic_trace(module)
    except Exception as exc:  # fx raises many types for untraceable code
        raise UnsupportedModelError(
            f"torch.fx could not trace the target ({type(exc).__name__}: {exc}); the target must be "
            f"a plain feed-forward module (no data-dependent control flow)"
        ) from exc
    modules = dict(gm.named_modules())
    nonneg: dict[fx.Node, bool] = {}
    layers: list[TargetLayer] = []
    by_name: dict[str, TargetLayer] = {}
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise UnsupportedModelError(f"the target must take exactly one input tensor; its forward takes {len(placeholders)}")

    tensor: dict[fx.Node, bool] = {}  # False: a shape value (x.size(0), ...), not an activation

    def arg_nonneg(a: Any) -> bool:
        if isinstance(a, fx.Node):
            return nonneg.get(a, False)
        return isinstance(a, (int, float)) and a >= 0

    for node in gm.graph.nodes:
        rule = elementwise(node, modules) if node.op in ("call_module", "call_function", "call_method") else None
        tensor[node] = True
        if node.op == "placeholder":
            nonneg[node] = input_nonneg
        elif node.op == "output":
            continue
        elif rule is not None:  # an activation kept as it is (its output sign from the rule)
            nonneg[node] = rule.nonneg if rule.nonneg is not None else arg_nonneg(node.args[0])
        elif softmax_dim(node, modules) is not None:
            nonneg[node] = True
        elif node.op == "call_module":
            sub = modules[node.target]
            if isinstance(sub, PARAM_MODULES):
                layer = TargetLayer(
                    name=node.target,
                    kind="linear" if isinstance(sub, nn.Linear) else "conv2d",
                    weight=sub.weight.detach().double().clone(),
                    bias=None if sub.bias is None else sub.bias.detach().double().clone(),
                    input_nonneg=arg_nonneg(node.args[0]),
                )
                if layer.kind == "conv2d":
                    layer.conv = {"stride": tuple(sub.stride), "padding": _conv_padding(sub, node.target),
                                  "dilation": tuple(sub.dilation), "groups": int(sub.groups)}
                layers.append(layer)
                by_name[node.target] = layer
                nonneg[node] = False
            elif isinstance(sub, BN_MODULES):
                src = node.args[0]
                ok = (isinstance(src, fx.Node) and src.op == "call_module" and src.target in by_name
                      and len(src.users) == 1)
                if not ok:
                    raise UnsupportedModelError(
                        f"BatchNorm {node.target!r} must directly follow a Linear/Conv2d whose output it alone "
                        f"uses, so it can be folded ({_where(node)})"
                    )
                layer = by_name[src.target]
                layer.weight, layer.bias = _fold_bn(layer, sub, node.target)
                layer.folded_bn = node.target
                nonneg[node] = False
            elif isinstance(sub, PASS_MODULES):
                nonneg[node] = True if isinstance(sub, nn.ReLU) else arg_nonneg(node.args[0])
            else:
                raise UnsupportedModelError(
                    f"unsupported module {type(sub).__name__} {node.target!r} ({_where(node)}); supported: "
                    f"Linear, Conv2d (any groups), BatchNorm1d/2d after them, ReLU, ReLU6, LeakyReLU, Sigmoid, "
                    f"Hardsigmoid, Tanh, Hardtanh, ELU, Softplus, SiLU, GELU, Hardswish, Mish, Softmax, "
                    f"(adaptive) max and average pooling, Flatten, Dropout, Identity, additions"
                )
        elif node.op == "call_function" and node.target in SHAPE_ARITHMETIC and \
                not any(tensor.get(a, False) for a in node.all_input_nodes):
            tensor[node] = False  # shape arithmetic (x.size(0) * 2, ...): no tensor involved
            continue
        elif node.op == "call_function":
            kind = PASS_FUNCTIONS.get(node.target)
            if kind is None:
                raise UnsupportedModelError(f"unsupported function {getattr(node.target, '__name__', node.target)} ({_where(node)})")
            why = _batch_kept(node, kind)
            if why:
                raise UnsupportedModelError(f"{kind}: {why} ({_where(node)})")
            nonneg[node] = _sign(kind, node, arg_nonneg)
        elif node.op == "call_method":
            if node.target not in PASS_METHODS:
                raise UnsupportedModelError(f"unsupported tensor method .{node.target}() ({_where(node)})")
            why = _batch_kept(node, node.target)
            if why:
                raise UnsupportedModelError(f".{node.target}(): {why} ({_where(node)})")
            nonneg[node] = _sign(node.target, node, arg_nonneg)
            if node.target == "size":
                tensor[node] = False
        elif node.op == "get_attr":
            raise UnsupportedModelError(f"the target reads a tensor attribute directly ({_where(node)}); only module calls are supported")
    if not layers:
        raise UnsupportedModelError("the target has no Linear or Conv2d layer: nothing to construct")

    for layer in layers:  # the folded target computes with the folded parameters
        old = gm.get_submodule(layer.name)
        if layer.kind == "linear":
            new = nn.Linear(layer.d_in, layer.d_out, bias=layer.bias is not None, dtype=torch.float64)
        else:
            new = nn.Conv2d(layer.in_channels, layer.d_out, layer.kernel, stride=layer.conv["stride"],
                            padding=layer.conv["padding"], dilation=layer.conv["dilation"], groups=layer.groups,
                            bias=layer.bias is not None, dtype=torch.float64)
        with torch.no_grad():
            new.weight.copy_(layer.weight)
            if layer.bias is not None:
                new.bias.copy_(layer.bias)
        del old
        gm.set_submodule(layer.name, new)
        if layer.folded_bn:
            gm.set_submodule(layer.folded_bn, nn.Identity())
    gm.recompile()
    return gm.eval(), layers
