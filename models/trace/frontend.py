"""The tracer's front end: the target (a deep copy, eval mode, float64) as a torch.fx GraphModule.

A plain module is traced by torch.fx with the modules of :data:`TRACED_THROUGH` traced into; a
Hugging Face model by transformers' fx tracer on ``input_ids`` alone (:func:`hf_trace`). Untraceable
code (data-dependent control flow) is refused in one line naming fx's reason.
"""

from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn as nn

from ..errors import UnsupportedModelError


#: torch.nn modules traced into (their forward's functional calls are what the tracer checks), where
#: torch.fx would keep them as opaque calls: normalisation layers (F.layer_norm / F.group_norm with
#: their affine parameters, split below) and transformer encoder layers
TRACED_THROUGH = (nn.LayerNorm, nn.GroupNorm, nn.TransformerEncoderLayer)


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return super().is_leaf_module(m, qualname) and not isinstance(m, TRACED_THROUGH)



def is_hugging_face(module: nn.Module) -> bool:
    return type(module).__module__.startswith("transformers.") and hasattr(module, "config")


def mutates(node: fx.Node) -> bool:
    """Whether a node has an effect besides its value: impure for fx, or an in-place op (GPT-2's causal
    mask is made by ``full.masked_fill_(...)`` whose value nobody reads; removing it unmasks attention)."""
    name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
    return node.is_impure() or (node.op in ("call_method", "call_function") and name.endswith("_")
                                and not name.endswith("__"))


def hf_trace(module: nn.Module) -> fx.GraphModule:
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
    gm.graph.eliminate_dead_code(is_impure_node=mutates)  # the logits alone are kept, and what they read
    gm.recompile()
    return gm



def trace_module(module: nn.Module) -> fx.GraphModule:
    """``module`` (changed: a copy in eval mode) as a GraphModule, by fx or transformers' tracer."""
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # the encoder layer's fused path is not traceable
    try:
        if is_hugging_face(module):
            return hf_trace(module)
        graph = _Tracer().trace(module)
        return fx.GraphModule(module, graph, type(module).__name__)
    except UnsupportedModelError:
        raise
    except Exception as exc:  # fx raises many types for untraceable code
        raise UnsupportedModelError(
            f"torch.fx could not trace the target ({type(exc).__name__}: {exc}); the target must be "
            f"a plain feed-forward module (no data-dependent control flow)"
        ) from exc
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
