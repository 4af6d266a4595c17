"""The input domain: the inputs a certified bound covers and verification samples.

Two kinds, owned here and nowhere else: a box (every input value in [lo, hi]) and, for a target whose
input is token ids (an Embedding reads it), every sequence of ids in lo..hi. Which kind follows from
the traced target (:meth:`InputDomain.for_target`); the run's files record ``[lo, hi]`` and the
report says ``input_tokens``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .data import DataError, Dataset
from .errors import UsageError
from .layers import TargetLayer, reads_tokens


@dataclass(frozen=True)
class InputDomain:
    """Every input value in [lo, hi]; with ``tokens``, every token id in lo..hi."""

    lo: float
    hi: float
    tokens: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "lo", float(self.lo))
        object.__setattr__(self, "hi", float(self.hi))
        if not (math.isfinite(self.lo) and math.isfinite(self.hi) and self.lo <= self.hi):
            raise UsageError(f"the input domain must be an interval LO <= HI of finite numbers; got "
                             f"[{self.lo}, {self.hi}]")

    @classmethod
    def given(cls, spec: "tuple[float, float] | str", model: torch.nn.Module) -> "InputDomain":
        """The domain a user gave: (lo, hi), or ``"tokens"``, every id of the model's (first) Embedding."""
        if spec != "tokens":
            return cls(*spec)
        embeds = [m for m in model.modules() if isinstance(m, torch.nn.Embedding)]
        if not embeds:
            raise UsageError("--input-domain tokens needs a target whose input is token ids (an nn.Embedding "
                             "first); this target has no Embedding")
        return cls(0.0, float(embeds[0].num_embeddings - 1))

    @classmethod
    def for_target(cls, domain: "InputDomain | tuple[float, float]", layers: list[TargetLayer]) -> "InputDomain":
        """``domain`` (an InputDomain or (lo, hi)) for the traced target's ``layers``: a range of token
        ids when an Embedding reads the input (the range checked against its rows), else a box."""
        lo, hi = (domain.lo, domain.hi) if isinstance(domain, InputDomain) else (float(domain[0]), float(domain[1]))
        if not reads_tokens(layers):
            return cls(lo, hi)
        vocab = min(layer.d_in for layer in layers if layer.reads_input)
        if not (lo.is_integer() and hi.is_integer() and 0 <= lo <= hi <= vocab - 1):
            raise UsageError(f"the target reads token ids (an Embedding of {vocab} rows first), so the input domain "
                             f"must be a range of ids within [0, {vocab - 1}] (--input-domain tokens); got {[lo, hi]}")
        return cls(lo, hi, tokens=True)

    @property
    def nonneg(self) -> bool:
        """Whether every input value is >= 0 (the tracer's sign analysis starts from it)."""
        return self.lo >= 0

    def example(self, input_shape: tuple[int, ...]) -> torch.Tensor:
        """One input of zeros, (1, *input_shape): token ids (int64) or float64."""
        return torch.zeros(1, *input_shape, dtype=torch.long if self.tokens else torch.float64)

    def box(self, input_shape: tuple[int, ...]) -> "Box":
        """The whole domain as one :class:`Box` of inputs of ``input_shape``."""
        return Box(torch.full((1, *input_shape), self.lo, dtype=torch.float64),
                   torch.full((1, *input_shape), self.hi, dtype=torch.float64))

    def balls(self, x: torch.Tensor, radius: float) -> "Box":
        """The l_inf balls of ``radius`` around each input of ``x`` (batch first), clipped to the domain."""
        x = x.double()
        return Box((x - radius).clamp(min=self.lo), (x + radius).clamp(max=self.hi))

    def samples(self, input_shape: tuple[int, ...], count: int, seed: int) -> torch.Tensor:
        """The two constant corners and ``count`` uniform samples (float32; token ids: uniform ids, int64)."""
        gen = torch.Generator().manual_seed(seed)
        if self.tokens:
            lo, hi = int(self.lo), int(self.hi)
            x = torch.randint(lo, hi + 1, (count, *input_shape), generator=gen)
            return torch.cat([torch.full((1, *input_shape), lo), torch.full((1, *input_shape), hi), x])
        x = torch.rand((count, *input_shape), generator=gen) * (self.hi - self.lo) + self.lo
        return torch.cat([torch.full((1, *input_shape), self.lo), torch.full((1, *input_shape), self.hi), x])

    def check_data(self, data: Dataset) -> None:
        """Data whose values leave the domain would be verified where the certified bound does not apply."""
        lo, hi = float(data.x.min()), float(data.x.max())
        if lo < self.lo or hi > self.hi:
            raise DataError(f"data {data.name} has values in [{lo:g}, {hi:g}], outside the declared input domain "
                            f"[{self.lo:g}, {self.hi:g}]; the certified bound would not apply")

    def describe(self) -> str:
        """The domain in words, as the report writes it."""
        if self.tokens:
            return f"every sequence of token ids in [{self.lo:.0f}, {self.hi:.0f}]"
        return f"the input box {self.to_json()}"

    def to_json(self) -> list[float]:
        """[lo, hi], as the ticket and the report record it."""
        return [self.lo, self.hi]


@dataclass(frozen=True)
class Box:
    """Regions of inputs a bound covers: per coordinate [lo, hi], float64 (regions, *input_shape):
    the whole domain (one region) or a ball around each of several inputs."""

    lo: torch.Tensor
    hi: torch.Tensor

    def __post_init__(self) -> None:
        if self.lo.shape != self.hi.shape or self.lo.dim() < 1 or not bool((self.lo <= self.hi).all()):
            raise ValueError(f"a Box needs lo <= hi of one shape (regions, *input_shape); got shapes "
                             f"{tuple(self.lo.shape)} and {tuple(self.hi.shape)}")

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.lo.shape[1:])

    def __len__(self) -> int:
        return len(self.lo)

    def part(self, start: int, stop: int) -> "Box":
        """Regions ``start`` to ``stop`` (exclusive) alone."""
        return Box(self.lo[start:stop], self.hi[start:stop])


def domain_samples(input_shape: tuple[int, ...], domain: tuple[float, float], count: int, seed: int,
                   tokens: bool = False) -> torch.Tensor:
    """:meth:`InputDomain.samples` of the domain (lo, hi)."""
    return InputDomain(float(domain[0]), float(domain[1]), tokens).samples(input_shape, count, seed)
