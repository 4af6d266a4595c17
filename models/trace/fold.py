"""Folding: a BatchNorm after a Linear / Conv2d folded into it (torch.nn.utils.fusion), a layer's
geometry read from its module, and the weights held as the target's own tensors where nothing was
folded (no copy of a 100M-weight target)."""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights

from ..errors import UnsupportedModelError
from ..layers import TargetLayer


def conv_padding(conv: nn.Conv2d, name: str) -> tuple[int, int]:
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


def fold_bn(layer: TargetLayer, bn: nn.Module, name: str) -> tuple[torch.Tensor, torch.Tensor]:
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



def held(weight: torch.Tensor, candidates: list[torch.Tensor]) -> torch.Tensor:
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

