"""TorchScript targets: rebuild a scripted or traced module as an fx GraphModule.

fx cannot trace a ``ScriptModule``, but its ``forward`` graph says everything the construction
needs. This walks that graph: calls of standard leaf modules (Linear, Conv2d, BatchNorm, ReLU,
pooling, Flatten, Dropout, Identity) become the same ``nn`` modules with the file's weights, under
the same qualified names (``features.0``, ``fc1``); calls of any other submodule (a Sequential, a
residual block) are followed into that submodule's own graph; the ops between them (relu, add,
flatten, view/reshape with ``size``, pooling, dropout) become fx nodes; ``if`` on a value known
when loading (e.g. ``self.training`` in eval mode) keeps the branch taken. Anything else (loops,
parameters used outside those modules, unknown ops) is refused with the op and its source line.
"""

from __future__ import annotations

import importlib
import operator
import warnings
from typing import Any, NamedTuple

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from .errors import LotteryError


class TorchScriptError(LotteryError, ValueError):
    """The TorchScript module holds something that cannot be rebuilt for tracing."""


def _where(node: torch._C.Node) -> str:
    src = node.sourceRange().strip().splitlines()
    return f"{node.kind()}" + (f" at {src[0].strip()}" if src else "")


def _pair(value: Any) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (list, tuple)) else (value, value)


def _leaf(sub: torch.jit.ScriptModule) -> nn.Module | None:
    """The standard module a scripted submodule was made from, with its weights; None if the
    submodule is not one of the supported leaves or (traced) does not keep its hyperparameters."""
    try:
        return _leaf_from_attributes(sub)
    except AttributeError:  # traced modules keep weights but not hyperparameters: follow their graph
        return None


def _leaf_from_attributes(sub: torch.jit.ScriptModule) -> nn.Module | None:
    kind = sub.original_name
    if kind == "Linear":
        w = sub.weight
        module = nn.Linear(w.shape[1], w.shape[0], bias=sub.bias is not None)
    elif kind == "Conv2d":
        w = sub.weight
        module = nn.Conv2d(w.shape[1] * sub.groups, w.shape[0], tuple(w.shape[2:]), stride=tuple(sub.stride),
                           padding=sub.padding if isinstance(sub.padding, str) else tuple(sub.padding),
                           dilation=tuple(sub.dilation), groups=sub.groups, bias=sub.bias is not None,
                           padding_mode=sub.padding_mode)
    elif kind in ("BatchNorm1d", "BatchNorm2d"):
        module = getattr(nn, kind)(sub.num_features, eps=sub.eps, momentum=sub.momentum, affine=sub.affine,
                                   track_running_stats=sub.track_running_stats)
    elif kind in ("MaxPool2d", "AvgPool2d"):
        extra = ({"dilation": sub.dilation, "ceil_mode": sub.ceil_mode} if kind == "MaxPool2d" else
                 {"ceil_mode": sub.ceil_mode, "count_include_pad": sub.count_include_pad,
                  "divisor_override": sub.divisor_override})
        module = getattr(nn, kind)(sub.kernel_size, sub.stride, sub.padding, **extra)
    elif kind == "Flatten":
        module = nn.Flatten(sub.start_dim, sub.end_dim)
    elif kind in ("ReLU", "Identity", "Dropout"):
        module = getattr(nn, kind)()
    else:
        return None
    module.load_state_dict(dict(sub.state_dict()))
    return module.eval()


def _put(root: nn.Module, qualname: str, module: nn.Module) -> None:
    parent = root
    *path, leaf = qualname.split(".")
    for part in path:
        if not hasattr(parent, part):
            parent.add_module(part, nn.Module())
        parent = getattr(parent, part)
    parent.add_module(leaf, module)


class _Param(NamedTuple):
    """A tensor attribute of a module, waiting for the linear / conv / batch-norm op that uses it."""

    owner: Any
    prefix: str
    name: str
    value: torch.Tensor | None


def _value(p: _Param | None) -> torch.Tensor | None:
    return None if p is None else p.value


_SCALAR_OPS = {
    "aten::lt": operator.lt, "aten::le": operator.le, "aten::gt": operator.gt, "aten::ge": operator.ge,
    "aten::eq": operator.eq, "aten::ne": operator.ne, "aten::__or__": operator.or_, "aten::__and__": operator.and_,
    "aten::__not__": operator.not_, "aten::__is__": operator.is_, "aten::__isnot__": operator.is_not,
    "aten::add": operator.add, "aten::sub": operator.sub, "aten::mul": operator.mul, "aten::neg": operator.neg,
    "aten::len": len, "aten::__getitem__": operator.getitem, "prim::unchecked_cast": lambda x: x,
}
_PARAM_OPS = {"aten::linear", "aten::_convolution", "aten::conv2d", "aten::batch_norm"}


class _Builder:
    def __init__(self) -> None:
        self.root = nn.Module()
        self.graph = fx.Graph()
        self.used: set[str] = set()

    def call_module(self, sub: torch.jit.ScriptModule, qualname: str, args: list[Any]) -> Any:
        leaf = _leaf(sub)
        if leaf is not None:
            qualname = qualname or "layer"  # the file is a single scripted layer
            self.used.add(qualname)
            _put(self.root, qualname, leaf)
            return self.graph.call_module(qualname, tuple(args))
        return self.inline(sub, sub.graph, qualname, args)

    def inline(self, module: torch.jit.ScriptModule, graph: torch._C.Graph, prefix: str, args: list[Any]) -> Any:
        inputs = list(graph.inputs())
        if len(inputs) - 1 != len(args):
            raise TorchScriptError(f"{module.original_name} {prefix or '(root)'}: forward takes {len(inputs) - 1} "
                                   f"inputs, got {len(args)}")
        return self.run(graph, [(module, prefix), *args])

    def run(self, graph: torch._C.Graph, args: list[Any]) -> Any:
        """Translate ``graph`` with its inputs bound to ``args``; returns its output value(s)."""
        env: dict[torch._C.Value, Any] = dict(zip(graph.inputs(), args))
        self.block(graph.nodes(), env)
        outputs = [env[v] for v in graph.return_node().inputs()]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def block(self, nodes, env: dict) -> None:
        for node in nodes:
            self.node(node, env)

    def node(self, node: torch._C.Node, env: dict) -> None:
        kind = node.kind()
        ins = [env[v] if v in env else None for v in node.inputs()]
        outs = list(node.outputs())
        params = [x for x in ins if isinstance(x, _Param)]
        if params and kind not in _PARAM_OPS:
            p = params[0]
            raise TorchScriptError(
                f"{_where(node)}: the forward of {p.owner.original_name} {p.prefix or '(root)'} uses its tensor "
                f"{p.name!r} in {kind}; only Linear, Conv2d and BatchNorm may hold parameters")
        if not self.structural(node, kind, ins, outs, env):
            env[outs[0]] = self.tensor_op(node, kind, ins, outs[0])
        if kind in ("aten::relu_", "aten::add_", "aten::dropout_"):
            env[node.inputsAt(0)] = env[outs[0]]  # later uses of the mutated input see the new value

    def structural(self, node: torch._C.Node, kind: str, ins: list[Any], outs: list, env: dict) -> bool:
        """Constants, attributes, lists and tuples, calls, loading-time arithmetic and branches: their
        values bound in ``env`` (no graph node); False for an op on tensors."""
        if kind == "prim::Constant":
            env[outs[0]] = outs[0].toIValue() if outs[0].type().kind() != "NoneType" else None
        elif kind == "prim::GetAttr":
            owner, prefix = ins[0]
            name = node.s("name")
            value = getattr(owner, name)
            if isinstance(value, torch.jit.ScriptModule):
                env[outs[0]] = (value, f"{prefix}.{name}" if prefix else name)
            elif isinstance(value, torch.Tensor) or value is None and name in ("weight", "bias"):
                env[outs[0]] = _Param(owner, prefix, name, value)
            else:
                env[outs[0]] = value
        elif kind in ("prim::ListConstruct", "prim::TupleConstruct"):
            env[outs[0]] = list(ins) if kind == "prim::ListConstruct" else tuple(ins)
        elif kind in ("prim::TupleUnpack", "prim::ListUnpack"):
            for out, value in zip(outs, ins[0]):
                env[out] = value
        elif kind == "prim::CallMethod":
            sub, qualname = ins[0]
            method = node.s("name")
            if method == "forward":
                env[outs[0]] = self.call_module(sub, qualname, ins[1:])
            else:  # another method (torchvision's forward calls self._forward_impl): followed into its graph
                try:
                    graph = getattr(sub, method).graph
                except (AttributeError, RuntimeError) as exc:
                    raise TorchScriptError(f"{_where(node)}: cannot follow method {method!r} of "
                                           f"{qualname or '(root)'} ({exc})") from exc
                env[outs[0]] = self.inline(sub, graph, qualname, ins[1:])
        elif kind == "prim::CallFunction":
            env[outs[0]] = self.call_function(node, ins[1:])
        elif kind in _SCALAR_OPS and not any(isinstance(x, (fx.Node, _Param)) for x in ins):
            env[outs[0]] = _SCALAR_OPS[kind](*ins)  # arithmetic on values known when loading
        elif kind == "prim::If":
            cond = ins[0]
            if not isinstance(cond, bool):
                raise TorchScriptError(f"{_where(node)}: an `if` on a value computed from the input; "
                                       "only conditions known when loading (e.g. self.training) are supported")
            block = list(node.blocks())[0 if cond else 1]
            self.block(block.nodes(), env)
            for out, value in zip(outs, block.returnNode().inputs()):
                env[out] = env[value]
        elif kind == "prim::RaiseException":
            raise TorchScriptError(f"{_where(node)}: the module raises on the taken branch")
        else:
            return False
        return True

    def tensor_op(self, node: torch._C.Node, kind: str, ins: list[Any], out: torch._C.Value) -> Any:
        """An op on tensors as an fx node (or the input itself, for ops that are identities in eval mode)."""
        g = self.graph
        if kind in _PARAM_OPS:
            return self.param_op(node, kind, ins, out)
        if kind in ("aten::relu", "aten::relu_"):
            return g.call_function(torch.relu, (ins[0],))
        if kind in ("aten::add", "aten::add_"):
            if not isinstance(ins[1], fx.Node) or ins[2] != 1:
                raise TorchScriptError(f"{_where(node)}: only tensor + tensor additions (alpha 1) are supported")
            return g.call_function(operator.add, (ins[0], ins[1]))
        if kind == "aten::flatten":
            return g.call_function(torch.flatten, (ins[0], ins[1], ins[2]))
        if kind in ("aten::view", "aten::reshape"):
            return g.call_method(kind.split("::")[1], (ins[0], *ins[1]))
        if kind == "aten::size":
            return g.call_method("size", tuple(ins))
        if kind == "aten::max_pool2d":
            x, k, s, p, d, ceil = ins
            return g.call_function(F.max_pool2d, (x, _pair(k)), {
                "stride": _pair(s) if s else None, "padding": _pair(p), "dilation": _pair(d), "ceil_mode": ceil})
        if kind == "aten::avg_pool2d":
            x, k, s, p, ceil, count_pad, divisor = ins
            return g.call_function(F.avg_pool2d, (x, _pair(k)), {
                "stride": _pair(s) if s else None, "padding": _pair(p), "ceil_mode": ceil,
                "count_include_pad": count_pad, "divisor_override": divisor})
        if kind in ("aten::dropout", "aten::dropout_", "aten::contiguous", "aten::detach",
                    "prim::NumToTensor", "aten::Int", "aten::ScalarImplicit"):
            return ins[0]  # eval mode / value-preserving
        raise TorchScriptError(f"{_where(node)}: op not supported in a TorchScript target (supported: calls of "
                               "Linear, Conv2d, BatchNorm, ReLU, pooling, Flatten, Dropout, Identity and of "
                               "modules made of them; relu, add, flatten, view/reshape, pooling, dropout)")

    def call_function(self, node: torch._C.Node, args: list[Any]) -> Any:
        """A call of a scripted function (e.g. ``F.relu``): followed into its graph."""
        qualname = str(node.inputsAt(0).type()).removeprefix("__torch__.")
        module_name, _, attr = qualname.rpartition(".")
        try:
            fn = getattr(importlib.import_module(module_name), attr)
            with warnings.catch_warnings():  # torch.jit.script is deprecated upstream; needed to read the file
                warnings.simplefilter("ignore", DeprecationWarning)
                graph = torch.jit.script(fn).graph
        except Exception as exc:  # any failure to find or script it: say which function
            raise TorchScriptError(f"{_where(node)}: cannot follow the call of {qualname} ({exc})") from exc
        inputs = list(graph.inputs())
        if len(inputs) != len(args):
            raise TorchScriptError(f"{_where(node)}: {qualname} takes {len(inputs)} arguments, the call passes {len(args)}")
        return self.run(graph, args)

    def param_op(self, node: torch._C.Node, kind: str, ins: list[Any], out: torch._C.Value) -> fx.Node:
        """A linear, convolution or batch-norm op of a traced module: the same nn module."""
        x, weight, bias = ins[0], ins[1], ins[2]
        if not isinstance(weight, _Param) or not (bias is None or isinstance(bias, _Param)):
            raise TorchScriptError(f"{_where(node)}: its weight must be a module parameter")
        w = weight.value
        if kind == "aten::linear":
            module = nn.Linear(w.shape[1], w.shape[0], bias=_value(bias) is not None)
        elif kind in ("aten::_convolution", "aten::conv2d"):
            if kind == "aten::_convolution":
                stride, padding, dilation, transposed, _, groups = ins[3:9]
                if transposed:
                    raise TorchScriptError(f"{_where(node)}: transposed convolutions are not supported")
            else:
                stride, padding, dilation, groups = ins[3:7]
            if w.dim() != 4:
                raise TorchScriptError(f"{_where(node)}: only 2-D convolutions are supported (weight {tuple(w.shape)})")
            module = nn.Conv2d(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), stride=_pair(stride),
                               padding=padding if isinstance(padding, str) else _pair(padding),
                               dilation=_pair(dilation), groups=groups, bias=_value(bias) is not None)
        else:  # aten::batch_norm(x, weight, bias, running_mean, running_var, training, momentum, eps, cudnn)
            mean, var, training, momentum, eps = ins[3:8]
            rank = out.type().dim() if isinstance(out.type(), torch._C.TensorType) else None
            if training or rank not in (2, 3, 4, None) or not isinstance(mean, _Param):
                raise TorchScriptError(f"{_where(node)}: only eval-mode BatchNorm1d/2d with running statistics "
                                       f"is supported (training={training}, input rank {rank})")
            if rank is None:  # a traced file saved and reloaded no longer says the rank: the producer does
                producer = self.root.get_submodule(x.target) if isinstance(x, fx.Node) and x.op == "call_module" else None
                rank = 4 if isinstance(producer, nn.Conv2d) else 2 if isinstance(producer, nn.Linear) else None
                if rank is None:
                    raise TorchScriptError(f"{_where(node)}: the saved graph does not say this BatchNorm's input rank "
                                           f"and it does not follow a Linear or Conv2d")
            module = (nn.BatchNorm2d if rank == 4 else nn.BatchNorm1d)(w.shape[0], eps=eps, momentum=momentum)
            with torch.no_grad():
                module.running_mean.copy_(mean.value)
                module.running_var.copy_(var.value)
        with torch.no_grad():
            module.weight.copy_(w)
            if _value(bias) is not None:
                module.bias.copy_(bias.value)
        name = weight.prefix or weight.name
        if name in self.used:
            raise TorchScriptError(f"{_where(node)}: module {name!r} holds more than one parametrised op")
        self.used.add(name)
        _put(self.root, name, module.eval())
        return self.graph.call_module(name, (x,))


def graph_module_from_script(scripted: torch.jit.ScriptModule) -> fx.GraphModule:
    """An fx GraphModule computing what ``scripted`` (scripted or traced, eval mode) computes."""
    scripted = scripted.eval()
    builder = _Builder()
    forward = scripted.graph
    args = [builder.graph.placeholder(v.debugName().split(".")[0] or f"input_{i}")
            for i, v in enumerate(list(forward.inputs())[1:])]
    out = builder.call_module(scripted, "", args)
    if not isinstance(out, fx.Node):
        raise TorchScriptError(f"the TorchScript module returns {type(out).__name__}; one tensor is expected")
    builder.graph.output(out)
    return fx.GraphModule(builder.root, builder.graph, class_name=f"Scripted{scripted.original_name}")
