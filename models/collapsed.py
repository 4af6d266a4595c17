"""The collapsed form of the pruned network: every pair as a target-shaped layer of its kept sums.

In exact arithmetic a pruned pair (fan-out A, ReLU, combine B, masks) maps its input v to

    S+ relu(v) - S- relu(-v) + b'

where S+ / S- are, per target weight, the sums of the kept coefficients of its positive / negative
unit group (:func:`models.problems.kept_sums`) and b' the kept constant units' sum (a non-negative
input has only S+; an embedding's pair is the token's column of S+). So the pruned network equals
the folded target's graph with each layer's weight replaced by these sums: a network of the
target's size and shape, whatever n is. Its float64 forward costs about two target forwards,
where the materialised pruned network is 21-42 times wider (and slow on the float64 convolution
path of a CPU).

Verification (:mod:`models.verify`) measures the float64 errors, the adversarial search and the
certified bound on this form, and still runs the materialised network (random values times masks):
in float32 on the inputs that fit its time, in float64 on a few, checking that the two forms
differ by float rounding only (anything more is a bug). The sums are formed from the masks and
the regenerated random values, a layer at a time.
"""

from __future__ import annotations

import copy

import torch
import torch.fx as fx
import torch.nn as nn

from .fxgraph import cast_layers, with_modules
from .layers import TargetLayer

#: the collapsed and the materialised float64 forms agree within this, relative to the output's
#: magnitude (1 + max |g|): float64 rounding of sums of at most a few thousand terms is far below it
FLOAT64_AGREEMENT = 1e-9
#: the materialised float32 form agrees with the collapsed float64 one within this, relative to the
#: output's magnitude: float32 rounding through the random network is measured at ~1e-6 of it
FLOAT32_AGREEMENT = 1e-3


class FormMismatchError(RuntimeError):
    """The materialised pruned network and its collapsed form differ by more than float rounding:
    a bug in one of them (the masks, the regenerated values or the sums), never the user's input."""


class CollapsedPair(nn.Module):
    """One pruned pair as the target's layer with its kept sums (float64 buffers; the module's dtype
    is that of its buffers, so ``.float()`` gives a float32 copy)."""

    def __init__(self, layer: TargetLayer, sums: list[torch.Tensor], bias: torch.Tensor | None):
        super().__init__()
        self.layer = layer  # its kind and geometry; its own weight is not used
        self.signed = len(sums) == 2
        # the sums are taken over, not copied (verification's certified bound reads the same tensors)
        self.register_buffer("pos", sums[0].reshape(layer.weight.shape))
        self.register_buffer("neg", sums[1].reshape(layer.weight.shape) if self.signed else None)
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layer.kind == "embedding":  # the token's column of kept sums
            return self.layer.apply(x, self.pos)
        y = self.layer.apply(torch.relu(x), self.pos, self.bias)
        if self.signed:
            y = y - self.layer.apply(torch.relu(-x), self.neg)
        return y


def in_float32(model: nn.Module, layers: list[TargetLayer]) -> nn.Module:
    """``model`` computing in float32: the folded target or a collapsed form (a graph holding the
    layers) as a view whose layers cast their float64 tensors at each call
    (:func:`models.fxgraph.cast_layers`: no float32 copy of the network); any other module copied."""
    names = [layer.name for layer in layers]
    if isinstance(model, fx.GraphModule) and all(_has(model, name) for name in names):
        return cast_layers(model, names, torch.float32)
    return copy.deepcopy(model).float().eval()


def _has(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


def collapse(folded: fx.GraphModule, layers: list[TargetLayer],
             kept: list[tuple[list[torch.Tensor], torch.Tensor | None]]) -> fx.GraphModule:
    """The collapsed pruned network (float64, eval mode): the folded target's graph with every layer
    replaced by its :class:`CollapsedPair`; ``kept``: per layer (sums per sign group, kept bias) as
    :func:`models.problems.kept_sums` gives them."""
    pairs = {layer.name: CollapsedPair(layer, sums, bias) for layer, (sums, bias) in zip(layers, kept)}
    return with_modules(folded, pairs).double().eval()
