"""The target's parametrised layers as the construction sees them: :class:`TargetLayer` (weight,
bias, geometry, input sign) and the grouped / diagonal linear map (:class:`GroupedLinear`) the
tracer gives elementwise affine parameters (LayerNorm's weight, layer scale, PReLU's slope)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F


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

