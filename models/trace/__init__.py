"""Tracing a target network: torch.fx front end, then an ordered list of passes over its graph.

The target becomes a GraphModule whose parametrised layers are Linear (on the last dimension, any
leading ones), Conv2d (any groups) and diagonal maps (:class:`models.layers.GroupedLinear`:
LayerNorm / GroupNorm weight and bias, a BatchNorm that does not follow a layer, layer scale,
PReLU's slope; a BatchNorm after a Linear / Conv2d is folded into it), attention decomposed into
its projections (:mod:`models.attention`), and whose other nodes are the parameter-free ops of the
rule registry (:mod:`models.rules`), kept as the target's own. Anything else is refused with the
op's name and where it is in the graph.

Each pass is ``pass_(gm, state)``: it rewrites ``gm`` in place (and recompiles it) and may read or
set fields of the :class:`TraceState`. :data:`PASSES` is the order they run in.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch.fx as fx
import torch.nn as nn

from ..attention import decompose
from ..errors import UnsupportedModelError
from ..layers import TargetLayer
from .affine import layer_norm_modules, norm_affine, prelu, unfoldable_batchnorm
from .check import check_ops
from .conv1d import conv1d_as_conv2d
from .extract import extract_layers, fold_target
from .frontend import trace_module
from .identities import EVAL_IDENTITIES, drop_eval_identities
from .parameters import drop_unused_attributes, learned_tokens, parameter_affine
from .sdpa import sdpa_as_ops

__all__ = ["EVAL_IDENTITIES", "PASSES", "TraceState", "UnsupportedModelError", "trace_target"]


@dataclass
class TraceState:
    """What the passes share: the target as given, its traced copy, and what they find."""

    target: nn.Module  # the user's module (its tensors are what the layers hold)
    module: nn.Module  # the deep copy traced (eval mode, float64)
    input_nonneg: bool  # the input domain is >= 0
    sources: dict[str, list[str]] = field(default_factory=dict)  # new layer -> target parameters it replaces
    nonneg: dict[fx.Node, bool] = field(default_factory=dict)  # set by check_ops
    dependent: dict[fx.Node, bool] = field(default_factory=dict)  # set by check_ops
    layers: list[TargetLayer] = field(default_factory=list)  # set by extract_layers


PASSES = [
    drop_eval_identities,  # stochastic depth and the like, called with training=False
    conv1d_as_conv2d,
    sdpa_as_ops,  # F.scaled_dot_product_attention as matmul / softmax
    layer_norm_modules,  # a LayerNorm kept whole: its functional form
    norm_affine,  # layer_norm / group_norm weight and bias: diagonal layers
    unfoldable_batchnorm,
    prelu,
    parameter_affine,  # layer scale, per-channel shifts, position tables
    learned_tokens,  # class tokens
    drop_unused_attributes,
    check_ops,  # every op against its rule; signs
    extract_layers,  # TargetLayers, BatchNorm folded
    fold_target,  # the folded target holds the layers' tensors
]


def trace_target(module: nn.Module, input_nonneg: bool) -> tuple[fx.GraphModule, list[TargetLayer]]:
    """Trace ``module`` (eval mode), check every op, fold BatchNorm, find non-negative inputs.

    Returns the *folded* target (a GraphModule computing the same function in float64, BN replaced
    by Identity and folded into the layer before it) and its parametrised layers in graph order.
    A layer's weight is the target's own tensor where nothing was folded into it (its storage: the
    target is not copied, so changing its weights afterwards changes what was traced), cast to
    float64 at each call (:class:`models.fxgraph.CastLayer`); float64 where BatchNorm was folded in.
    """
    copied = copy.deepcopy(module).eval().double()
    state = TraceState(target=module, module=copied, input_nonneg=input_nonneg,
                       sources=decompose(copied))  # nn.MultiheadAttention / TransformerEncoder as their own ops
    gm = trace_module(copied)
    for pass_ in PASSES:
        pass_(gm, state)
    gm.graph.lint()
    return gm.eval(), state.layers
