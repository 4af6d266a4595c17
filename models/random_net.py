"""The seeded random network of the theorem: one (fan-out A, ReLU, combine B) pair per layer.

Hidden units of a pair, in this order:
* ``units_per_input`` fan-out units per input i (index i * units_per_input + k), whose only
  kept input weight is ``u[i, k]`` = A[(i, k), i];
* ``n_const`` constant units (present when the target layer has a bias): all their input
  weights are pruned and their kept bias ``beta_k > 0`` makes them output ``relu(beta_k)``.

Distributions (recorded in every :class:`LayerSpec`):
* ``fixed-sign``: |u| ~ U(0, 1]; for a non-negative input n units per input, all positive;
  otherwise 2n, the first n positive and the next n negative, so each of the two subset-sum
  problems of a weight has exactly n coefficients. beta ~ U(0, 1]. B ~ U[-s, s] with the
  per-layer scale s = ``scale_margin`` * max |target weight or bias|, so the products u * B cover
  the layer's largest |w| (ReLU networks are positively homogeneous and pruning cannot rescale).
  The products' signs are random: now and then a large weight gets too few coefficients of its
  sign (P(at most 2 of 21 positive) is about 1.1e-4) and no exact solver can reach it.
* ``balanced`` (default): as ``fixed-sign``, but the sign of every product is fixed by the unit's
  index: within each group of n units (and among the n constant units) the first ceil(n/2)
  products are positive and the other floor(n/2) negative (|B| ~ U[0, s], its sign set so that
  sign(B u) is the unit's). Every weight sees both signs in equal numbers.
* ``paper``: every entry i.i.d. U[-1, 1] (Pensia et al.), 2n fan-out units per input with random
  signs (so the two groups have random sizes), beta ~ U[-1, 1], s = 1.
All other entries (A's off-block weights in the dense variant, A's other biases, B's biases)
are U[-1, 1] and pruned.

Values are drawn in float32 on the CPU from a generator seeded by (seed, layer index), in a
fixed order, so the same seed gives the same network whatever the variant, chunking, workers
or device. The dense variant's off-block entries come from a second stream so that they do not
shift the shared values.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

LAYOUTS = ("balanced", "fixed-sign", "paper")
SIGNED_UNITS = ("balanced", "fixed-sign")  # |u| random, the sign of u fixed by the unit's group
VARIANTS = ("fanout", "dense")


@dataclass(frozen=True)
class LayerSpec:
    """Everything needed to regenerate one pair's random values (stored in the ticket)."""

    name: str
    kind: str  # "linear" | "conv2d"
    d_in: int
    d_out: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    n: int  # coefficients per subset-sum problem (the paper's n)
    layout: str
    input_nonneg: bool
    has_bias: bool
    scale: float  # B ~ U[-scale, scale]
    seed: int  # this layer's generator seed
    const_tap: tuple[int, int] = (0, 0)  # conv: the one tap of the constant channels kept

    @property
    def units_per_input(self) -> int:
        if self.layout in SIGNED_UNITS and self.input_nonneg:
            return self.n
        return 2 * self.n

    @property
    def n_const(self) -> int:
        return self.n if self.has_bias else 0

    @property
    def hidden(self) -> int:
        return self.d_in * self.units_per_input + self.n_const

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LayerSpec":
        d = dict(d)
        for key in ("kernel", "stride", "padding", "dilation", "const_tap"):
            d[key] = tuple(d[key])
        return cls(**d)

    def dense_params(self) -> int:
        """Parameters of the theorem's dense pair: A (hidden x d_in) + its bias, B + its bias."""
        kh, kw = self.kernel
        return self.hidden * self.d_in + self.hidden + self.d_out * self.hidden * kh * kw + self.d_out

    def fanout_params(self) -> int:
        """Parameters materialised by the fan-out variant (block entries of A only)."""
        kh, kw = self.kernel
        return self.d_in * self.units_per_input + self.hidden + self.d_out * self.hidden * kh * kw + self.d_out


def layer_seed(seed: int, index: int) -> int:
    """Independent per-layer seed derived from the run seed and the layer's position."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _uniform(gen: torch.Generator, shape: tuple[int, ...], low: float, high: float) -> torch.Tensor:
    return torch.rand(shape, generator=gen, dtype=torch.float32) * (high - low) + low


def generate(spec: LayerSpec, dense: bool = False) -> dict[str, torch.Tensor]:
    """Draw the pair's random values (float32, CPU).

    Returns ``u`` (d_in, units_per_input): the block entries of A; ``a_bias`` (hidden,) with the
    constant units' beta last; ``B`` (d_out, hidden[, kh, kw]); ``b_bias`` (d_out,); and with
    ``dense`` also ``A`` (hidden, d_in), the full fan-out matrix with the block entries equal to u.
    """
    gen = torch.Generator().manual_seed(spec.seed)
    upi = spec.units_per_input
    if spec.layout in SIGNED_UNITS:
        u = 1.0 - torch.rand((spec.d_in, upi), generator=gen, dtype=torch.float32)  # (0, 1]
        if upi == 2 * spec.n:
            u[:, spec.n:] *= -1.0  # second group negative
        beta = 1.0 - torch.rand((spec.n_const,), generator=gen, dtype=torch.float32)
    else:
        u = _uniform(gen, (spec.d_in, upi), -1.0, 1.0)
        beta = _uniform(gen, (spec.n_const,), -1.0, 1.0)
    kh, kw = spec.kernel
    b_shape = (spec.d_out, spec.hidden) if spec.kind == "linear" else (spec.d_out, spec.hidden, kh, kw)
    B = _uniform(gen, b_shape, -spec.scale, spec.scale)
    if spec.layout == "balanced":
        B = _balance_signs(spec, B, u)
    other_a_bias = _uniform(gen, (spec.d_in * upi,), -1.0, 1.0)
    b_bias = _uniform(gen, (spec.d_out,), -1.0, 1.0)
    out = {"u": u, "a_bias": torch.cat([other_a_bias, beta]), "B": B, "b_bias": b_bias}
    if dense:
        gen_dense = torch.Generator().manual_seed(spec.seed ^ 0x5DEECE66D)
        A = _uniform(gen_dense, (spec.hidden, spec.d_in), -1.0, 1.0)
        rows = torch.arange(spec.d_in * upi)
        A[rows, rows // upi] = u.reshape(-1)
        out["A"] = A
    return out


def product_signs(spec: LayerSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``balanced`` layout's product signs: (d_in, units_per_input) for the fan-out units and
    (n_const,) for the constant units; in every group of n units the first ceil(n/2) are +1."""
    first_half = torch.arange(spec.n) < (spec.n + 1) // 2
    group = torch.where(first_half, 1.0, -1.0)
    fan = group.repeat(spec.units_per_input // spec.n).expand(spec.d_in, -1)
    return fan, group[: spec.n_const]


def _balance_signs(spec: LayerSpec, B: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """|B| with its sign chosen so that every product B u (and B relu(beta)) has the unit's sign."""
    fan, const = product_signs(spec)
    sign = torch.cat([(fan * torch.sign(u)).reshape(-1), const]).to(B.dtype)
    return B.abs() * sign.reshape(1, -1, *([1] * (B.dim() - 2)))


def groups(spec: LayerSpec, u: torch.Tensor) -> list[torch.Tensor]:
    """Bool masks (d_in, units_per_input) of the subset-sum groups of each input's units.

    Non-negative input: one group (the positive units; any negative ones are pruned). Otherwise
    two groups, positive and negative units, each giving one problem per target weight.
    """
    positive = u > 0
    if spec.input_nonneg:
        return [positive]
    return [positive, u < 0]
