"""The pruned random network as torch modules.

Each target layer becomes a :class:`TicketPair`: fan-out layer A, ReLU, combine layer B. Kept
weights follow ``torch.nn.utils.prune``'s convention: the random values live in ``weight_orig``
/ ``bias_orig`` and a bool-valued ``weight_mask`` / ``bias_mask`` buffer multiplies them in a
forward pre-hook (``prune.custom_from_mask``), so ``prune.remove`` makes the ticket permanent.

Variants (identical outputs, tested): ``dense`` materialises the theorem's full random A
(hidden x d_in; a 1x1 conv for Conv2d targets) and prunes all but the block entries;
``fanout`` materialises only the block entries (a per-input scaling; a grouped 1x1 conv).
"""

from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import prune

from .random_net import LayerSpec


class FanOut(nn.Module):
    """The fan-out variant of A: unit (i, k) outputs u[i, k] * x_i (before the ReLU); the constant
    units output their bias. Same pruning convention as torch (``*_orig`` times ``*_mask``)."""

    def __init__(self, spec: LayerSpec, u: torch.Tensor, a_bias: torch.Tensor,
                 u_mask: torch.Tensor, a_bias_mask: torch.Tensor):
        super().__init__()
        self.conv = spec.kind == "conv2d"
        self.d_in, self.upi, self.n_const = spec.d_in, spec.units_per_input, spec.n_const
        self.weight_orig = nn.Parameter(u.clone())  # (d_in, units_per_input)
        self.bias_orig = nn.Parameter(a_bias.clone())  # (hidden,)
        self.register_buffer("weight_mask", u_mask.to(u.dtype))
        self.register_buffer("bias_mask", a_bias_mask.to(a_bias.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight_orig * self.weight_mask
        b = self.bias_orig * self.bias_mask
        n_fan = self.d_in * self.upi
        if self.conv:  # x: (N, c_in, H, W) -> (N, c_in * upi, H, W) as a grouped 1x1 conv
            h = F.conv2d(x, w.reshape(n_fan, 1, 1, 1), b[:n_fan], groups=self.d_in)
            const = b[n_fan:].reshape(1, -1, 1, 1).expand(x.shape[0], -1, x.shape[2], x.shape[3])
        else:
            h = (x.unsqueeze(-1) * w).reshape(x.shape[0], n_fan) + b[:n_fan]
            const = b[n_fan:].expand(x.shape[0], -1)
        return torch.cat([h, const], dim=1) if self.n_const else h


class TicketPair(nn.Module):
    """One target layer replaced by fan-out layer A, ReLU, combine layer B."""

    def __init__(self, spec: LayerSpec, values: dict[str, torch.Tensor], masks: dict[str, torch.Tensor],
                 variant: str = "fanout"):
        super().__init__()
        self.spec_name = spec.name
        if variant == "dense":
            rows = torch.arange(spec.d_in * spec.units_per_input)
            a_mask = torch.zeros(spec.hidden, spec.d_in, dtype=torch.bool)
            a_mask[rows, rows // spec.units_per_input] = masks["u"].reshape(-1)
            if spec.kind == "linear":
                fan = nn.Linear(spec.d_in, spec.hidden)
                weight = values["A"]
            else:
                fan = nn.Conv2d(spec.d_in, spec.hidden, 1)
                weight = values["A"].reshape(spec.hidden, spec.d_in, 1, 1)
                a_mask = a_mask.reshape(spec.hidden, spec.d_in, 1, 1)
            with torch.no_grad():
                fan.weight.copy_(weight)
                fan.bias.copy_(values["a_bias"])
            prune.custom_from_mask(fan, "weight", a_mask)
            prune.custom_from_mask(fan, "bias", masks["a_bias"])
            self.fan_out = fan
        elif variant == "fanout":
            self.fan_out = FanOut(spec, values["u"], values["a_bias"], masks["u"], masks["a_bias"])
        else:
            raise ValueError(f"`variant` must be 'fanout' or 'dense'; got {variant!r}")
        self.relu = nn.ReLU()
        if spec.kind == "linear":
            comb = nn.Linear(spec.hidden, spec.d_out)
        else:
            comb = nn.Conv2d(spec.hidden, spec.d_out, spec.kernel, stride=spec.stride,
                             padding=spec.padding, dilation=spec.dilation)
        with torch.no_grad():
            comb.weight.copy_(values["B"])
            comb.bias.copy_(values["b_bias"])
        prune.custom_from_mask(comb, "weight", masks["B"])
        prune.custom_from_mask(comb, "bias", torch.zeros(spec.d_out, dtype=torch.bool))  # all pruned
        self.combine = comb

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.combine(self.relu(self.fan_out(x)))


def set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


def assemble(target: fx.GraphModule, specs: list[LayerSpec], values: list[dict[str, torch.Tensor]],
             masks: list[dict[str, torch.Tensor]], variant: str = "fanout") -> fx.GraphModule:
    """The pruned random network: the folded target's graph with every layer replaced by its pair.

    Parameter-free ops (ReLU, pooling, flatten, residual additions) stay where they are, so a
    target of l parametrised layers becomes 2 l. The result is float32, in eval mode.
    """
    import copy

    gm = copy.deepcopy(target)
    for spec, vals, mk in zip(specs, values, masks):
        set_submodule(gm, spec.name, TicketPair(spec, vals, mk, variant))
    gm.recompile()
    return gm.float().eval()
