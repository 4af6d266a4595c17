"""Tracing a target network with torch.fx: supported ops, BatchNorm folding, sign analysis.

The target becomes a GraphModule whose parametrised layers are Linear (on the last dimension, any
leading ones), Conv2d (any groups) and diagonal maps (:class:`GroupedLinear`: LayerNorm/GroupNorm
weight and bias, BatchNorm that does not follow a layer, layer scale, PReLU's weight as
relu(x) - a relu(-x); a BatchNorm after a Linear/Conv2d is folded into it), attention decomposed into its projections (:mod:`models.attention`), and whose
other nodes are
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

from .attention import decompose
from .errors import UnsupportedModelError
from .ops import elementwise, softmax_dim

def grouped_linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, groups: int = 1) -> torch.Tensor:
    """A linear map of the last dimension whose inputs and outputs split into ``groups`` blocks, output
    block G reading input block G only; ``w`` (d_out, d_in / groups). groups = 1: ``F.linear``."""
    if groups == 1:
        return F.linear(x, w, b)
    d_out, k = w.shape
    y = torch.einsum("...gk,gok->...go", x.unflatten(-1, (groups, k)), w.reshape(groups, d_out // groups, k))
    y = y.flatten(-2)
    return y if b is None else y + b


def grouped_linear_transposed(y: torch.Tensor, w: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """The transpose of :func:`grouped_linear` (without bias) applied to ``y``: y . grouped_linear(x, w)
    = (returned) . x."""
    if groups == 1:
        return y @ w
    d_out, k = w.shape
    x = torch.einsum("...go,gok->...gk", y.unflatten(-1, (groups, d_out // groups)), w.reshape(groups, d_out // groups, k))
    return x.flatten(-2)


class GroupedLinear(nn.Module):
    """:func:`grouped_linear` as a layer. With one input and one output per group it is a diagonal
    map, ``x * weight + bias`` per feature: how the tracer represents elementwise affine parameters
    that cannot be folded (LayerNorm/GroupNorm weight and bias, a BatchNorm after a nonlinearity,
    layer scale), so the construction gives them a pair like any other layer."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, groups: int):
        super().__init__()
        self.groups = int(groups)
        self.weight = nn.Parameter(weight.detach().clone())
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())

    @property
    def in_features(self) -> int:
        return self.weight.shape[1] * self.groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grouped_linear(x, self.weight, self.bias, self.groups)


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


PARAM_MODULES = (nn.Linear, nn.Conv2d, GroupedLinear)
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
    torch.movedim: "movedim", torch.matmul: "matmul", operator.matmul: "matmul",
    F.layer_norm: "layer_norm", F.group_norm: "group_norm", operator.iadd: "add", torch.chunk: "chunk",
    torch.split: "split", torch.unflatten: "unflatten", torch.unsqueeze: "unsqueeze", torch.squeeze: "squeeze",
}
PASS_METHODS = {"relu", "flatten", "view", "reshape", "add", "contiguous", "sub", "mul", "div", "mean",
                "permute", "transpose", "movedim", "matmul", "chunk", "split", "unflatten", "unsqueeze", "squeeze"}
TUPLE_KINDS = {"chunk", "split"}  # ops whose value is a tuple of tensors, read by getitem
#: functions that are the identity in eval mode, found by qualified name (torchvision is not a
#: dependency): (module, name, position of the ``training`` argument)
EVAL_IDENTITIES = {("torchvision.ops.stochastic_depth", "stochastic_depth"): 3}


def _sign(kind: str, node: fx.Node, arg_nonneg) -> bool:
    """Whether the op's output is >= 0 wherever its inputs' signs say so."""
    args = node.args
    if kind == "relu":
        return True
    if kind in ("add", "mul", "matmul"):
        return all(arg_nonneg(a) for a in args[:2])
    if kind == "cat":
        return all(arg_nonneg(a) for a in args[0])
    if kind == "div":
        return arg_nonneg(args[0]) and arg_nonneg(args[1])
    if kind == "pad":
        value = node.kwargs.get("value", args[3] if len(args) > 3 else 0)
        return arg_nonneg(args[0]) and isinstance(value, (int, float)) and value >= 0
    if kind in ("sub", "neg", "layer_norm", "group_norm"):
        return False
    return arg_nonneg(args[0])


def _kind(node: fx.Node) -> str | None:
    """The pass-through kind of a function or method call (None for other nodes)."""
    if node.op == "call_function":
        return PASS_FUNCTIONS.get(node.target)
    return node.target if node.op == "call_method" else None


def _drop_eval_identities(gm: fx.GraphModule) -> None:
    """Remove calls that are the identity in eval mode (:data:`EVAL_IDENTITIES`, called with training=False)."""
    for node in list(gm.graph.nodes):
        key = (getattr(node.target, "__module__", None), getattr(node.target, "__name__", None))
        if node.op == "call_function" and key in EVAL_IDENTITIES:
            i = EVAL_IDENTITIES[key]
            training = node.args[i] if len(node.args) > i else node.kwargs.get("training", True)
            if training is False:
                node.replace_all_uses_with(node.args[0])
                gm.graph.erase_node(node)
    gm.recompile()


def _sdpa_as_ops(gm: fx.GraphModule) -> None:
    """Every F.scaled_dot_product_attention becomes what it computes in eval mode:
    softmax(q k^T * scale + attn_mask) v with matmul and softmax (an additive float mask kept as a
    constant; causal or boolean masks and dropout are refused)."""
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not F.scaled_dot_product_attention:
            continue
        names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale")
        given = dict(zip(names, node.args), **node.kwargs)
        if given.get("is_causal") or given.get("dropout_p", 0.0) or given.get("enable_gqa"):
            raise UnsupportedModelError(f"scaled_dot_product_attention with is_causal, dropout or enable_gqa "
                                        f"({_where(node)})")
        q, k, v, mask, scale = given["query"], given["key"], given["value"], given.get("attn_mask"), given.get("scale")
        with graph.inserting_before(node):
            scores = graph.call_function(torch.matmul, (q, graph.call_method("transpose", (k, -2, -1))))
            if scale is None:
                scale = graph.call_function(operator.pow, (graph.call_method("size", (q, -1)), -0.5))
            scores = graph.call_function(operator.mul, (scores, scale))
            if mask is not None:
                if isinstance(mask, fx.Node) and mask.meta.get("tensor_meta") is not None and \
                        mask.meta["tensor_meta"].dtype == torch.bool:
                    raise UnsupportedModelError(f"scaled_dot_product_attention with a boolean mask ({_where(node)})")
                scores = graph.call_function(operator.add, (scores, mask))
            weights = graph.call_function(torch.softmax, (scores, -1))
            out = graph.call_function(torch.matmul, (weights, v))
        node.replace_all_uses_with(out)
        graph.erase_node(node)
    gm.recompile()


def _conv1d_as_conv2d(gm: fx.GraphModule) -> None:
    """Every Conv1d call becomes unsqueeze(2) -> Conv2d with a (1, k) kernel (same name) -> squeeze(2):
    the same map, so the construction's Conv2d pairs (groups, taps, constant channels) apply."""
    modules = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.Conv1d):
            continue
        conv = modules[node.target]
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str) and conv.padding != "valid":
            raise UnsupportedModelError(f"Conv1d {node.target!r}: padding={conv.padding!r}, padding_mode="
                                        f"{conv.padding_mode!r}; only explicit zero padding is supported")
        padding = (0, 0) if conv.padding == "valid" else (0, conv.padding[0])
        new = nn.Conv2d(conv.in_channels, conv.out_channels, (1, conv.kernel_size[0]), stride=(1, conv.stride[0]),
                        padding=padding, dilation=(1, conv.dilation[0]), groups=conv.groups,
                        bias=conv.bias is not None, dtype=conv.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(conv.weight.unsqueeze(2))
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
        gm.delete_submodule(node.target)
        gm.add_submodule(node.target, new)
        with gm.graph.inserting_before(node):
            node.args = (gm.graph.call_method("unsqueeze", (node.args[0], 2)), *node.args[1:])
        with gm.graph.inserting_after(node):
            out = gm.graph.call_method("squeeze", (node, 2))
        node.replace_all_uses_with(out, delete_user_cb=lambda user: user is not out)
    gm.recompile()


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


def _batch_kept(node: fx.Node, kind: str) -> str | None:
    """Why an op would mix the batch dimension (dim 0) into others, or None: slicing must keep
    ``[:, ...]``, cat/mean/transpose must not name dim 0, permute must keep 0 first."""
    args = list(node.args) + list(node.kwargs.values())
    if kind == "getitem":
        index = node.args[1]
        src = node.args[0]
        if isinstance(src, fx.Node) and _kind(src) in TUPLE_KINDS and isinstance(index, int):
            return None  # one part of a chunk/split
        first = index[0] if isinstance(index, tuple) and index else index
        inner = index if isinstance(index, tuple) else (index,)
        if first != slice(None) or any(isinstance(i, fx.Node) for i in inner):
            return f"indexing must keep the batch dimension whole and use constant indices (x[:, ...]); got {index!r}"
    if kind == "flatten" and node.op != "call_module":
        start = node.kwargs.get("start_dim", node.args[1] if len(node.args) > 1 else 0)
        if start == 0:
            return "flatten from dim 0 would merge the batch dimension; flatten from dim 1 (torch.flatten(x, 1))"
    if kind in ("unsqueeze", "squeeze"):
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
        if dim is None or dim == 0 or isinstance(dim, fx.Node):
            return f"{kind} must name a dim other than 0 (the batch dimension); got {dim!r}"
    if kind in TUPLE_KINDS:
        dim = node.kwargs.get("dim", node.args[2] if len(node.args) > 2 else 0)
        if dim == 0 or isinstance(dim, fx.Node):
            return f"{kind} along dim {dim!r} would split the batch dimension (dim 0); use dims >= 1"
    if kind in ("cat", "mean"):
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
        dims = dim if isinstance(dim, (tuple, list)) else (dim,)
        if any(d == 0 or d is None or isinstance(d, fx.Node) for d in dims):
            return f"{kind} over dim {dim!r} would mix the batch dimension (dim 0) in; use dims >= 1"
    if kind in ("transpose", "movedim") and any(a == 0 for a in args[1:3]):
        return f"{kind} of dim 0 (the batch dimension)"
    if kind in ("layer_norm", "group_norm") and any(
            isinstance(a, fx.Node) for a in (*node.args[2:4], node.kwargs.get("weight"), node.kwargs.get("bias"))):
        return "normalisation weight or bias computed from activations"
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



@dataclass
class TargetLayer:
    """One parametrised layer of the target (BatchNorm already folded in)."""

    name: str  # qualified module name in the traced graph, e.g. "fc1" or "features.0"
    kind: str  # "linear", "conv2d" or "embedding" (a linear map of the one-hot token)
    # (d_out, d_in) or (c_out, c_in, kh, kw); an embedding's (dim, vocab). Where nothing was folded into
    # it, the target's own tensor (its dtype, its storage: no copy), else float64; weight64() for values
    weight: torch.Tensor
    bias: torch.Tensor | None  # float64 (d_out,) or None
    input_nonneg: bool  # the layer's input is >= 0 on the whole input domain
    conv: dict[str, Any] = field(default_factory=dict)  # stride, padding, dilation
    folded_bn: str | None = None  # name of the BatchNorm folded into it
    sources: list[str] = field(default_factory=list)  # the target's parameters it replaces (besides folded_bn's)
    reads_input: bool = False  # an embedding of the target's input ids (others read constant ids: positions)

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

    @property
    def geometry(self) -> dict[str, tuple[int, int]]:
        """stride, padding and dilation (a Linear's: those of a 1x1 convolution)."""
        c = self.conv
        return {"stride": tuple(c.get("stride", (1, 1))), "padding": tuple(c.get("padding", (0, 0))),
                "dilation": tuple(c.get("dilation", (1, 1)))}

    def weight64(self, rows: slice | None = None) -> torch.Tensor:
        """The weight (or its output rows ``rows``) in float64: exact, the stored dtype holds the value."""
        w = self.weight if rows is None else self.weight[rows]
        return w if w.dtype == torch.float64 else w.double()

    def num_params(self) -> int:
        return self.weight.numel() + (self.bias.numel() if self.bias is not None else 0)

    def apply(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        """The layer's linear map with weight ``w`` (its own shape) and bias ``b`` applied to ``x``."""
        if self.kind == "linear":
            return grouped_linear(x, w, b, self.groups)
        if self.kind == "embedding":  # x: token ids
            return F.embedding(x, w.T)
        c = self.conv
        return F.conv2d(x, w, b, stride=c["stride"], padding=c["padding"], dilation=c["dilation"],
                        groups=c.get("groups", 1))

    def apply_transposed(self, y: torch.Tensor, w: torch.Tensor, in_shape: tuple[int, ...]) -> torch.Tensor:
        """The transpose of :meth:`apply` without bias, for a batch ``y`` of output-shaped functionals:
        y[k] . apply(x, w) = (returned)[k] . x + const. ``in_shape``: the input's shape without the
        batch dimension (a strided convolution's transpose needs it). No forward pass is run."""
        if self.kind == "linear":
            return grouped_linear_transposed(y, w, self.groups)
        if self.kind == "embedding":
            raise ValueError(f"layer {self.name!r} reads token ids: its input is not a vector to transpose onto")
        c = self.conv
        return torch.nn.grad.conv2d_input((y.shape[0], *in_shape), w, y, stride=c["stride"], padding=c["padding"],
                                          dilation=c["dilation"], groups=c.get("groups", 1))


def reads_tokens(layers: list[TargetLayer]) -> bool:
    """Whether the target's input is token ids: an Embedding reads it."""
    return any(layer.reads_input for layer in layers)


def _where(node: fx.Node) -> str:
    stack = node.meta.get("stack_trace")
    return f"node {node.name!r} ({node.op} {node.target!r})" + (f" at {stack.strip().splitlines()[-1]}" if stack else "")


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


#: torch.nn modules traced into (their forward's functional calls are what the tracer checks), where
#: torch.fx would keep them as opaque calls: normalisation layers (F.layer_norm / F.group_norm with
#: their affine parameters, split below) and transformer encoder layers
TRACED_THROUGH = (nn.LayerNorm, nn.GroupNorm, nn.TransformerEncoderLayer)


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return super().is_leaf_module(m, qualname) and not isinstance(m, TRACED_THROUGH)


def _diag_node(gm: fx.GraphModule, after: fx.Node, x: fx.Node, name: str, weight: torch.Tensor,
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


def _param(gm: fx.GraphModule, node: Any) -> torch.Tensor | None:
    """The float64 value of the parameter a get_attr node reads (None for anything else)."""
    is_param = isinstance(node, fx.Node) and node.op == "get_attr" and \
        node.target in {name for name, _ in gm.named_parameters()}
    return gm.get_parameter(node.target).detach().double() if is_param else None


def _free_name(gm: fx.GraphModule, base: str, called: set[str]) -> str:
    """``base`` when no call in the graph uses a module of that name and it names no parameter or
    buffer (a module traced into, e.g. a LayerNorm, is replaced), else base_affine, base_affine2, ..."""
    tensors = {n for n, _ in gm.named_parameters()} | {n for n, _ in gm.named_buffers()}
    name, i = base, 1
    while name in called or name in tensors:
        name = f"{base}_affine" + (str(i) if i > 1 else "")
        i += 1
    called.add(name)
    return name


def _affine_to_pairs(gm: fx.GraphModule, sources: dict[str, list[str]], original: nn.Module) -> None:
    """Rewrite the elementwise affine parameters of the graph as diagonal layers (:class:`GroupedLinear`)
    so each gets a pair: F.layer_norm / F.group_norm with weight or bias become the parameter-free
    normalisation then ``x * weight + bias`` per feature; a BatchNorm that does not directly follow a
    Linear/Conv2d (so cannot be folded) becomes its per-channel affine map; a tensor multiplied or
    added by a parameter with one non-broadcast dimension (layer scale, a learned per-channel shift)
    becomes a diagonal layer too, and so does a learned token (a parameter expanded over the batch and
    concatenated: class tokens), with weight 0 on zeros and the token as its bias. ``sources`` gets, per new layer, the target parameters it replaces.
    A normalisation module traced into (in ``original``, the module traced) gives its name to its
    diagonal layer; other parameters give theirs + "_affine"."""
    graph = gm.graph
    modules = dict(gm.named_modules())
    owners = dict(original.named_modules())
    for node in list(graph.nodes):  # a LayerNorm kept whole by another tracer: its functional form
        ln = modules.get(node.target) if node.op == "call_module" else None
        if type(ln) is nn.LayerNorm:
            with graph.inserting_before(node):
                weight, bias = [graph.get_attr(f"{node.target}.{p}") if getattr(ln, p) is not None else None
                                for p in ("weight", "bias")]
                fn = graph.call_function(F.layer_norm, (node.args[0], tuple(ln.normalized_shape), weight, bias, ln.eps))
            node.replace_all_uses_with(fn)
            graph.erase_node(node)
    called = {n.target for n in graph.nodes if n.op == "call_module"}

    def arg(node, i, key, default=None):
        return node.args[i] if len(node.args) > i else node.kwargs.get(key, default)

    for node in list(graph.nodes):
        if node.op == "call_function" and node.target in (F.layer_norm, F.group_norm):
            w_node, b_node = arg(node, 2, "weight"), arg(node, 3, "bias")
            params = [p for p in (w_node, b_node) if isinstance(p, fx.Node)]
            if not params or any(p.op != "get_attr" for p in params):
                continue
            x, size = node.args[0], node.args[1]
            if node.target is F.layer_norm and len(tuple(size)) != 1:
                raise UnsupportedModelError(
                    f"layer_norm over {len(tuple(size))} dimensions {tuple(size)} with an affine weight: only the "
                    f"last dimension's is supported ({_where(node)})")
            weight, bias = _param(gm, w_node), _param(gm, b_node)
            d = (weight if weight is not None else bias).numel()
            weight = torch.ones(d, dtype=torch.float64) if weight is None else weight
            eps = arg(node, 4, "eps", 1e-5)
            with graph.inserting_before(node):
                plain = graph.call_function(node.target, (x, size, None, None, eps))
            owner = params[0].target.rsplit(".", 1)[0] if "." in params[0].target else ""
            own = owners.get(owner) if owner else None
            name = _free_name(gm, owner if isinstance(own, TRACED_THROUGH) else params[0].target + "_affine", called)
            out = _diag_node(gm, plain, plain, name, weight, bias, dim=-1 if node.target is F.layer_norm else 1)
            sources[name] = [p.target for p in params]
        elif node.op == "call_module" and isinstance(modules.get(node.target), BN_MODULES):
            src = node.args[0]
            foldable = (isinstance(src, fx.Node) and src.op == "call_module"
                        and isinstance(modules.get(src.target), PARAM_MODULES) and len(src.users) == 1)
            if foldable:
                continue
            bn = modules[node.target]
            layer = TargetLayer(node.target, "linear", torch.eye(bn.num_features, dtype=torch.float64), None, False)
            weight, bias = _fold_bn(layer, bn, node.target)
            name = _free_name(gm, node.target, called - {node.target})
            out = _diag_node(gm, node, node.args[0], name, torch.diagonal(weight).clone(), bias, dim=1)
            sources[name] = [f"{node.target}.{p}" for p, _ in bn.named_parameters()]
        elif (node.op == "call_module" and isinstance(modules.get(node.target), nn.PReLU)) or \
                (node.op == "call_function" and node.target is F.prelu):
            # prelu(x) = relu(x) - a relu(-x): a per-channel (or single) weight times an activation
            if node.op == "call_module":
                x, a, source = node.args[0], modules[node.target].weight.detach().double(), f"{node.target}.weight"
            else:
                x, a, source = node.args[0], _param(gm, arg(node, 1, "weight")), getattr(arg(node, 1, "weight"), "target", None)
                if a is None:
                    raise UnsupportedModelError(f"prelu's weight must be a parameter ({_where(node)})")
            name = _free_name(gm, node.target if node.op == "call_module" else source + "_affine", called - {node.target})
            with graph.inserting_before(node):
                pos = graph.call_function(torch.relu, (x,))
                neg = graph.call_function(torch.relu, (graph.call_function(operator.neg, (x,)),))
                single = graph.call_function(torch.unsqueeze, (neg, -1)) if a.numel() == 1 else neg
            scaled = _diag_node(gm, single, single, name, a.reshape(-1), None, dim=-1 if a.numel() == 1 else 1)
            with graph.inserting_after(scaled):
                if a.numel() == 1:
                    scaled = graph.call_function(torch.squeeze, (scaled, -1))
            with graph.inserting_after(scaled):
                out = graph.call_function(operator.sub, (pos, scaled))
            sources[name] = [source]
        elif node.op in ("call_function", "call_method") and (node.target in (operator.mul, torch.mul, operator.add, torch.add)
                                                              or node.target in ("mul", "add")) and len(node.args) == 2:
            params = [a for a in node.args if isinstance(a, fx.Node) and a.op == "get_attr"]
            others = [a for a in node.args if a not in params]
            if len(params) != 1 or len(others) != 1 or not isinstance(others[0], fx.Node):
                continue
            value = _param(gm, params[0])
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
                    f"become a diagonal pair "
                    f"({_where(node)})")
            vec = value.reshape(-1)
            weight, bias = (vec, None) if scale else (torch.ones_like(vec), vec)
            name = _free_name(gm, params[0].target + "_affine", called)
            if len(big) == 1:
                out = _diag_node(gm, node, others[0], name, weight, bias, dim=big[0] - value.dim())
            else:  # flatten the table's dimensions into one feature dimension and back
                core = tuple(value.shape[big[0]:])
                with graph.inserting_after(node):
                    flat = graph.call_function(torch.flatten, (others[0], -len(core)))
                diag = _diag_node(gm, flat, flat, name, weight, bias)
                with graph.inserting_after(diag):
                    out = graph.call_function(torch.unflatten, (diag, -1, core))
            sources[name] = [params[0].target]
        else:
            continue
        node.replace_all_uses_with(out)
        graph.erase_node(node)
    for node in list(graph.nodes):  # learned tokens: a parameter broadcast over the batch and concatenated
        if node.op != "get_attr" or len(node.users) != 1:
            continue
        expand = next(iter(node.users))
        cat = next(iter(expand.users)) if len(expand.users) == 1 else None
        if not (expand.op == "call_method" and expand.target == "expand" and cat is not None
                and cat.op == "call_function" and cat.target is torch.cat):
            continue
        dim = cat.kwargs.get("dim", cat.args[1] if len(cat.args) > 1 else 0)
        others = [t for t in cat.args[0] if t is not expand]
        value = _param(gm, node)
        if value is None or not others or not isinstance(dim, int) or dim < 1 or value.shape[0] != 1:
            continue
        # the token is what a diagonal pair with weight 0 and bias p computes on any input shaped like
        # it (a slice of another part of the cat): constant units, as for any bias
        index = (slice(None),) * dim + (slice(0, value.shape[dim]),)
        with graph.inserting_before(expand):
            part = graph.call_function(operator.getitem, (others[0], index))
        name = _free_name(gm, node.target + "_affine", called)
        core = tuple(value.shape[1:])
        with graph.inserting_after(part):
            flat = graph.call_function(torch.flatten, (part, 1))
        diag = _diag_node(gm, flat, flat, name, torch.zeros(value.numel(), dtype=torch.float64), value.reshape(-1))
        with graph.inserting_after(diag):
            out = graph.call_function(torch.unflatten, (diag, 1, core))
        sources[name] = [node.target]
        expand.replace_all_uses_with(out)
        graph.erase_node(expand)
    for node in list(graph.nodes):
        if node.op == "get_attr" and not node.users:
            graph.erase_node(node)
    graph.lint()
    gm.recompile()


def _is_hugging_face(module: nn.Module) -> bool:
    return type(module).__module__.startswith("transformers.") and hasattr(module, "config")


def _mutates(node: fx.Node) -> bool:
    """Whether a node has an effect besides its value: impure for fx, or an in-place op (GPT-2's causal
    mask is made by ``full.masked_fill_(...)`` whose value nobody reads; removing it unmasks attention)."""
    name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
    return node.is_impure() or (node.op in ("call_method", "call_function") and name.endswith("_")
                                and not name.endswith("__"))


def _hf_trace(module: nn.Module) -> fx.GraphModule:
    """A Hugging Face model (a copy: it is changed) traced with transformers' fx tracer on ``input_ids``
    alone (eager attention, no cache, transformers' Conv1D as the Linear it is); its output reduced to
    the logits (or its one tensor)."""
    try:
        from transformers.utils.fx import HFTracer, check_if_model_is_supported, get_concrete_args
    except ImportError as exc:
        raise UnsupportedModelError(f"a Hugging Face model needs transformers' fx tracer (transformers.utils.fx, "
                                    f"present in transformers < 5): {exc}") from exc
    module.config.use_cache = False
    for name, sub in list(module.named_modules()):  # GPT-2's Conv1D: x @ W + b, a Linear with weight W^T
        if type(sub).__name__ == "Conv1D" and type(sub).__module__.startswith("transformers."):
            linear = nn.Linear(*sub.weight.shape, bias=sub.bias is not None, dtype=sub.weight.dtype)
            with torch.no_grad():
                linear.weight.copy_(sub.weight.T)
                if sub.bias is not None:
                    linear.bias.copy_(sub.bias)
            module.set_submodule(name, linear)
    if hasattr(module.config, "_attn_implementation"):
        module.config._attn_implementation = "eager"  # plain matmul / softmax, no fused kernel
    check_if_model_is_supported(module)
    tracer = HFTracer()  # transformers' symbolic_trace, the tracer let go after: functions it patched during
    graph = tracer.trace(module, concrete_args=get_concrete_args(module, ["input_ids"]))  # tracing keep it alive,
    gm = fx.GraphModule(module, graph)
    vars(tracer).clear()  # and with it the traced copy's every weight (float64: 8 bytes a weight)
    for node in gm.graph.nodes:  # masks filled with finfo(model dtype).min and torch's default (float32) dtype
        if node.op == "call_function" and node.target is torch.full and "dtype" not in node.kwargs \
                and len(node.args) > 1 and isinstance(node.args[1], fx.Node):  # overflow for a float64 model:
            node.kwargs = dict(node.kwargs, dtype=torch.float64)  # filled in float64 (cast to the model's after)
    out = next(n for n in gm.graph.nodes if n.op == "output")
    value = out.args[0]
    if isinstance(value, dict):
        keys = [k for k, v in value.items() if isinstance(v, fx.Node)]
        key = "logits" if "logits" in keys else keys[0] if len(keys) == 1 else None
        if key is None:
            raise UnsupportedModelError(f"the Hugging Face model returns {keys}; expected 'logits' or one tensor")
        out.args = (value[key],)
    gm.graph.eliminate_dead_code(is_impure_node=_mutates)  # the logits alone are kept, and what they read
    gm.recompile()
    return gm


#: ops that only rearrange a tensor's entries (an embedding may read the token ids through them)
RESHAPE_METHODS = ("view", "reshape", "flatten", "unsqueeze", "squeeze", "contiguous")
RESHAPE_FUNCTIONS = (torch.reshape, torch.flatten, torch.unsqueeze, torch.squeeze)


def _reshaped_from(arg: Any, source: fx.Node) -> bool:
    """Whether ``arg`` is ``source`` or ``source`` reshaped (GPT-2 reads ``input_ids.view(-1, T)``)."""
    while isinstance(arg, fx.Node) and arg is not source:
        if not ((arg.op == "call_method" and arg.target in RESHAPE_METHODS)
                or (arg.op == "call_function" and arg.target in RESHAPE_FUNCTIONS)):
            return False
        arg = arg.args[0]
    return arg is source


def _held(weight: torch.Tensor, candidates: list[torch.Tensor]) -> torch.Tensor:
    """``weight`` (float64, exactly the target's values) as the target's own tensor where one of
    ``candidates`` (the target's parameters the layer replaces) holds it, as is or transposed (an
    embedding's, a Hugging Face Conv1D's): its storage, no copy. Else in float32 where that holds it
    exactly (a copy, half the size), else ``weight`` itself (BatchNorm folded in, float64 values)."""
    for t in candidates:
        if not t.is_floating_point() or t.numel() != weight.numel() or t.device != weight.device:
            continue
        for view in (t.detach(), t.detach().mT if t.dim() == 2 else None):
            if view is not None and view.shape == weight.shape and torch.equal(view.double(), weight):
                return view
    narrow = weight.float()
    return narrow if torch.equal(narrow.double(), weight) else weight


def trace_target(module: nn.Module, input_nonneg: bool) -> tuple[fx.GraphModule, list[TargetLayer]]:
    """Trace ``module`` (eval mode), check every op, fold BatchNorm, find non-negative inputs.

    Returns the *folded* target (a GraphModule computing the same function in float64, BN replaced
    by Identity and folded into the layer before it) and its parametrised layers in graph order.
    A layer's weight is the target's own tensor where nothing was folded into it (its storage: the
    target is not copied, so changing its weights afterwards changes what was traced), cast to
    float64 at each call (:class:`CastLayer`); float64 where BatchNorm was folded in.
    """
    target = module
    module = copy.deepcopy(module).eval().double()
    sources = decompose(module)  # nn.MultiheadAttention and nn.TransformerEncoder as their own ops
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # the encoder layer's fused path is not traceable
    try:
        if _is_hugging_face(module):
            gm = _hf_trace(module)
        else:
            graph = _Tracer().trace(module)
            gm = fx.GraphModule(module, graph, type(module).__name__)
    except UnsupportedModelError:
        raise
    except Exception as exc:  # fx raises many types for untraceable code
        raise UnsupportedModelError(
            f"torch.fx could not trace the target ({type(exc).__name__}: {exc}); the target must be "
            f"a plain feed-forward module (no data-dependent control flow)"
        ) from exc
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    _drop_eval_identities(gm)
    _conv1d_as_conv2d(gm)
    _sdpa_as_ops(gm)
    _affine_to_pairs(gm, sources, module)
    modules = dict(gm.named_modules())
    nonneg: dict[fx.Node, bool] = {}
    layers: list[TargetLayer] = []
    by_name: dict[str, TargetLayer] = {}
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise UnsupportedModelError(f"the target must take exactly one input tensor; its forward takes {len(placeholders)}")

    def arg_nonneg(a: Any) -> bool:
        if isinstance(a, fx.Node):
            return nonneg.get(a, False)
        return isinstance(a, (int, float)) and a >= 0

    dependent = data_dependent(gm, lambda m: isinstance(m, (*PARAM_MODULES, *BN_MODULES, nn.Embedding)))
    parameters = {name for name, _ in gm.named_parameters()}
    for node in gm.graph.nodes:
        rule = elementwise(node, modules) if node.op in ("call_module", "call_function", "call_method") else None
        if node.op in ("call_function", "call_method") and not dependent[node]:
            continue  # shape arithmetic or a constant of the graph (mask of ones, position ids): kept as it is
        if node.op == "get_attr" and node.target not in parameters:
            continue  # a buffer: a constant
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
            if isinstance(sub, nn.Embedding):
                if sub.max_norm is not None:
                    raise UnsupportedModelError(f"Embedding {node.target!r} has max_norm={sub.max_norm} (it renormalises "
                                                f"rows at lookup, not a linear map) ({_where(node)})")
                reads_input = _reshaped_from(node.args[0], placeholders[0])
                if not reads_input and dependent[node.args[0]]:
                    raise UnsupportedModelError(f"Embedding {node.target!r} must read the target's input (token ids, "
                                                f"reshaped or not) or constant ids (positions) ({_where(node)})")
                # a linear map of the one-hot token: weight (dim, vocab), input >= 0
                layer = TargetLayer(name=node.target, kind="embedding", weight=sub.weight.detach().T,
                                    bias=None, input_nonneg=True, sources=[f"{node.target}.weight"],
                                    reads_input=reads_input)
                layers.append(layer)
                by_name[node.target] = layer
                nonneg[node] = False
            elif isinstance(sub, PARAM_MODULES):
                layer = TargetLayer(
                    name=node.target,
                    kind="conv2d" if isinstance(sub, nn.Conv2d) else "linear",
                    weight=sub.weight.detach(),  # float64 already (the traced copy), not copied again
                    bias=None if sub.bias is None else sub.bias.detach(),
                    input_nonneg=arg_nonneg(node.args[0]),
                )
                if layer.kind == "conv2d":
                    layer.conv = {"stride": tuple(sub.stride), "padding": _conv_padding(sub, node.target),
                                  "dilation": tuple(sub.dilation), "groups": int(sub.groups)}
                elif isinstance(sub, GroupedLinear):
                    layer.conv = {"groups": sub.groups}
                layer.sources = sources.get(node.target) or [f"{node.target}.{p}" for p, _ in sub.named_parameters()]
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
                    f"Linear, Conv2d (any groups), BatchNorm1d/2d, LayerNorm, GroupNorm, MultiheadAttention "
                    f"(batch_first, no masks), TransformerEncoder(Layer), ReLU, ReLU6, LeakyReLU, Sigmoid, "
                    f"Hardsigmoid, Tanh, Hardtanh, ELU, Softplus, SiLU, GELU, Hardswish, Mish, PReLU, Softmax, "
                    f"(adaptive) max and average pooling, Flatten, Dropout, Identity, additions"
                )
        elif node.op == "call_function":
            kind = PASS_FUNCTIONS.get(node.target)
            if kind is None:
                raise UnsupportedModelError(f"unsupported function {getattr(node.target, '__name__', node.target)} "
                                            f"({_where(node)}){_of_parameters_alone(gm, node)}")
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
        elif node.op == "get_attr":
            buffers = {name for name, _ in gm.named_buffers()}
            # a parameter read with a buffer beside it: indexed by it (table[index]) or handed with it to a
            # function (torchvision's wrapped _get_relative_position_bias(table, index, window))
            gathers = [u for u in node.users if u.op == "call_function"
                       and any(isinstance(a, fx.Node) and a.op == "get_attr" and a.target in buffers for a in u.args)]
            if gathers:  # e.g. Swin's relative position bias: table[relative_position_index]
                raise UnsupportedModelError(
                    f"parameter {node.target!r} is read through an index buffer ({_where(gathers[0])}): a gathered "
                    f"table, as Swin's relative position bias; there is no rule for a gathered parameter yet (it "
                    f"would construct the table's entries as target weights and gather them by the same index)")
            raise UnsupportedModelError(
                f"the target uses the tensor {node.target!r} directly ({_where(node)}); supported: a parameter that "
                f"multiplies or is added to an activation and varies along one dimension (a per-channel scale or "
                f"shift) or is a (1, T, D) position table, a learned token concatenated to the input, and the weight "
                f"and bias of layer_norm / group_norm")
    if not layers:
        raise UnsupportedModelError("the target has no Linear or Conv2d layer: nothing to construct")

    own = dict(target.named_parameters(remove_duplicate=False))  # tied: under every name
    for layer in layers:  # the folded target computes with the folded parameters
        old = gm.get_submodule(layer.name)
        if layer.folded_bn is None:  # the target's own tensor, not a float64 copy of it
            layer.weight = _held(layer.weight, [own[s] for s in layer.sources if s in own])
        if layer.kind == "embedding":
            new = nn.Embedding(layer.d_in, layer.d_out, device="meta")
            new.weight = nn.Parameter(layer.weight.T, requires_grad=False)  # one tensor with the layer's (tied: one)
        else:
            if layer.kind == "linear" and layer.groups > 1:
                new = GroupedLinear(torch.empty(layer.weight.shape, device="meta"), None, layer.groups)
            elif layer.kind == "linear":
                new = nn.Linear(layer.d_in, layer.d_out, bias=False, device="meta")
            else:
                new = nn.Conv2d(layer.in_channels, layer.d_out, layer.kernel, stride=layer.conv["stride"],
                                padding=layer.conv["padding"], dilation=layer.conv["dilation"], groups=layer.groups,
                                bias=False, device="meta")
            # the folded module and the layer hold one tensor (not two float64 copies of the target)
            new.weight = nn.Parameter(layer.weight, requires_grad=False)
            new.bias = None if layer.bias is None else nn.Parameter(layer.bias, requires_grad=False)
        del old
        # in float64 whatever the tensor's own dtype: cast a layer at a time, at each call
        gm.set_submodule(layer.name, new if layer.weight.dtype == torch.float64 else CastLayer(new, torch.float64))
        if layer.folded_bn:
            gm.set_submodule(layer.folded_bn, nn.Identity())
    gm.recompile()
    return gm.eval(), layers
