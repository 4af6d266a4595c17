"""The pruned network: what a construction produced and what a rebuilt ticket is.

:func:`models.construct.construct` and :func:`models.ticket.rebuild` both return a
:class:`PrunedNetwork`, and :func:`models.verify.verify` takes one: the target and its folded trace,
each pair's spec (its random values regenerate from the seed) and solution (masks and the kept sums
formed from them), the materialised pruned network, the input domain and the settings.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn

from .domain import InputDomain
from .layers import TargetLayer
from .masks import PackedMask
from .memory import MemoryPlan
from .options import ConstructOptions
from .problems import bias_errors, weight_errors
from .random_net import LayerSpec

@dataclass
class LayerSolution:
    """Masks and kept sums of one pair; its errors follow from the sums and the target layer."""

    masks: dict[str, torch.Tensor | PackedMask]  # bool "u" (d_in, upi), "a_bias" (hidden,); "B" like B, packed
    layer: TargetLayer = field(repr=False)  # the target layer the pair computes
    sums: list[torch.Tensor] = field(repr=False)  # float64 kept sums per sign group (d_out, in_group, kh, kw)
    bias_sum: torch.Tensor | None = field(repr=False)  # float64 kept bias (d_out,) or None
    status_counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    backend: str = ""
    problems: int = 0
    presolved: int = 0  # problems settled by the solver's exact presolve, not the backend
    n_search: dict[str, Any] | None = None  # --n auto: the layer's search (models.auto_n.NSearch)

    def kept(self) -> int:
        return int(sum(int(m.sum()) for m in self.masks.values()))

    @property
    def weight_error(self) -> np.ndarray:
        """Every weight's error in float64, max over the sign groups (the weight's shape); formed
        from the kept sums at each call, not held (8 bytes a weight)."""
        return weight_errors(self.layer.weight, self.sums)

    @property
    def bias_error(self) -> np.ndarray | None:
        """Every bias's error in float64 (d_out,), or None."""
        return bias_errors(self.layer.bias, self.bias_sum)

    def error_summary(self) -> tuple[float, float]:
        """(max, mean) over every weight's and bias's error, the weight errors formed once (no
        flat copy of them beside it)."""
        parts = [self.weight_error] + ([self.bias_error] if self.bias_sum is not None else [])
        count = sum(p.size for p in parts)
        return (max(float(p.max(initial=0.0)) for p in parts),
                sum(float(p.sum()) for p in parts) / count if count else 0.0)

    def errors(self) -> np.ndarray:
        """Every weight's and bias's error, flat (a copy: :meth:`error_summary` for large layers)."""
        errs = self.weight_error.reshape(-1)
        return errs if self.bias_sum is None else np.concatenate([errs, self.bias_error])


@dataclass
class PrunedNetwork:
    """A pruned network, constructed or rebuilt from its ticket: the target, its folded trace and
    layers, each pair's spec and solution, the materialised pruned network, the input domain, and the
    settings and timings (a rebuilt ticket has no solve timings)."""

    target: nn.Module  # the target as given (eval mode); its layers' weights are held, not copied
    folded: fx.GraphModule  # the traced target computing in float64, BatchNorm folded
    layers: list[TargetLayer]
    specs: list[LayerSpec]
    solutions: list[LayerSolution]
    pruned: fx.GraphModule  # float32 pruned random network
    input_shape: tuple[int, ...]
    domain: InputDomain
    options: ConstructOptions
    variant: str
    seconds: dict[str, float]
    memory: dict[str, float] = field(default_factory=dict)  # peak resident memory (MB) after the solve phase
    plan: MemoryPlan | None = None  # the memory plan (verification batch size)

    def target_as(self, dtype: torch.dtype) -> nn.Module:
        """A copy of the target in ``dtype``, eval mode, its output one tensor (:class:`TensorOutput`)."""
        return TensorOutput(copy.deepcopy(self.target)).to(dtype).eval()


class TensorOutput(nn.Module):
    """The target with its output as one tensor: a Hugging Face model's logits (its ModelOutput's
    ``logits``), a tuple's first element, else the output itself - what the folded trace returns."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if isinstance(out, torch.Tensor):
            return out
        if hasattr(out, "logits"):
            return out.logits
        return out[0]
