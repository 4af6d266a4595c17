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
  index: the j-th unit of each group of n units (and the j-th constant unit) has a positive
  product for even j and a negative one for odd j (|B| ~ U[0, s], its sign set so that sign(B u)
  is the unit's): ceil(n/2) positive and floor(n/2) negative products for every weight.
* ``paper``: every entry i.i.d. U[-1, 1] (Pensia et al.), 2n fan-out units per input with random
  signs (so the two groups have random sizes), beta ~ U[-1, 1], s = 1.
All other entries (A's off-block weights in the dense variant, A's other biases, B's biases)
are U[-1, 1] and pruned.

Values are drawn in float32 on the CPU, each unit's from its own generator seeded by (the layer's
seed, the unit's group and index in the group): the same seed gives the same network whatever the
variant, chunking, workers or device, and the values for n are a prefix of those for n + 1 (what
``--n auto`` relies on). The dense variant's off-block entries come from further streams.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

LAYOUTS = ("balanced", "fixed-sign", "paper")
KINDS = ("linear", "conv2d", "embedding")  # an embedding is a linear map of the one-hot token
SIGNED_UNITS = ("balanced", "fixed-sign")  # |u| random, the sign of u fixed by the unit's group
VARIANTS = ("fanout", "dense")
# stream keys: what a unit's generator is seeded with besides the layer seed
FAN_KEY, CONST_KEY, BIAS_KEY, DENSE_KEY = 0, 1, 2, 3


@dataclass(frozen=True)
class LayerSpec:
    """Everything needed to regenerate one pair's random values (stored in the ticket)."""

    name: str
    kind: str  # one of KINDS
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
    groups: int = 1  # conv groups: the pair keeps them (each group its own units and constant units)

    @property
    def units_per_input(self) -> int:
        if self.layout in SIGNED_UNITS and self.input_nonneg:
            return self.n
        return 2 * self.n

    @property
    def n_const(self) -> int:
        """Constant units per group."""
        return self.n if self.has_bias else 0

    @property
    def in_group(self) -> int:
        """Input channels of one group (the target weight's second dimension)."""
        return self.d_in // self.groups

    @property
    def hidden_group(self) -> int:
        """Hidden units of one group: its inputs' fan-out units, then its constant units."""
        return self.in_group * self.units_per_input + self.n_const

    @property
    def hidden(self) -> int:
        return self.groups * self.hidden_group

    def group_of(self, rows: slice | None = None) -> torch.Tensor:
        """The conv group of each output row in ``rows`` (all rows by default)."""
        rows = rows or slice(0, self.d_out)
        return torch.arange(rows.start, rows.stop) // (self.d_out // self.groups)

    def per_output(self, t: torch.Tensor, rows: slice | None = None) -> torch.Tensor:
        """A per-input tensor (d_in, ...) seen from the output rows ``rows``: (rows, in_group, ...),
        the inputs of each output's conv group (all inputs when groups = 1)."""
        return t.reshape(self.groups, self.in_group, *t.shape[1:])[self.group_of(rows)]

    def fan_index(self) -> torch.Tensor:
        """(d_in, units_per_input): the hidden channel of fan-out unit (i, k)."""
        i = torch.arange(self.d_in)[:, None]
        k = torch.arange(self.units_per_input)[None, :]
        return (i // self.in_group) * self.hidden_group + (i % self.in_group) * self.units_per_input + k

    def const_index(self) -> torch.Tensor:
        """(groups, n_const): the hidden channel of constant unit j of group G."""
        g = torch.arange(self.groups)[:, None]
        return g * self.hidden_group + self.in_group * self.units_per_input + torch.arange(self.n_const)[None, :]

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
        return self.hidden * self.d_in + self.hidden + self.d_out * self.hidden_group * kh * kw + self.d_out

    def fanout_params(self) -> int:
        """Parameters materialised by the fan-out variant (block entries of A only)."""
        kh, kw = self.kernel
        return self.d_in * self.units_per_input + self.hidden + self.d_out * self.hidden_group * kh * kw + self.d_out


def layer_seed(seed: int, index: int) -> int:
    """Independent per-layer seed derived from the run seed and the layer's position."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _uniform(gen: torch.Generator, shape: tuple[int, ...], low: float, high: float) -> torch.Tensor:
    return torch.rand(shape, generator=gen, dtype=torch.float32) * (high - low) + low


def _stream(spec: LayerSpec, *key: int) -> torch.Generator:
    """The generator of one unit's values: seeded by (the layer's seed, key), independent of n."""
    state = np.random.SeedSequence([spec.seed, *key]).generate_state(1, dtype=np.uint64)[0] >> 1
    return torch.Generator().manual_seed(int(state))


def unit_sign(j: int) -> float:
    """The ``balanced`` layout's product sign of the j-th unit of a group: + for even j, - for odd,
    so any n units hold ceil(n/2) positive and floor(n/2) negative products."""
    return 1.0 if j % 2 == 0 else -1.0


def _taps(spec: LayerSpec) -> tuple[int, ...]:
    return () if spec.kind != "conv2d" else tuple(spec.kernel)


def _unit_keys(spec: LayerSpec) -> list[tuple[int, int]]:
    """(group, index in group) of each of an input's units, in the order of the hidden layer."""
    groups_of = spec.units_per_input // spec.n
    return [(g, j) for g in range(groups_of) for j in range(spec.n)]


def generate(spec: LayerSpec, dense: bool = False) -> dict[str, torch.Tensor]:
    """Draw the pair's random values (float32, CPU).

    Returns ``u`` (d_in, units_per_input): the block entries of A; ``a_bias`` (hidden,) with the
    constant units' beta last; ``B`` (d_out, hidden[, kh, kw]); ``b_bias`` (d_out,); and with
    ``dense`` also ``A`` (hidden, d_in), the full fan-out matrix with the block entries equal to u.

    Every unit's values come from their own stream, seeded by (layer seed, group, index), so the
    values of a network with n coefficients are a prefix of those with n + 1 (``--n auto`` adds
    units without changing the ones already solved against).
    """
    fan, const, head = _heads(spec)
    B = _rows(spec, fan, const, slice(0, spec.d_out))
    a_bias = head["a_bias"].clone()  # the fan-out units' A biases come after B in their streams
    a_bias[spec.fan_index().reshape(-1)] = torch.stack([_uniform(gen, (spec.d_in,), -1.0, 1.0) for gen, _ in fan],
                                                       dim=1).reshape(-1)
    b_bias = _uniform(_stream(spec, BIAS_KEY), (spec.d_out,), -1.0, 1.0)
    out = {"u": head["u"], "a_bias": a_bias, "B": B, "b_bias": b_bias}
    keys = _unit_keys(spec)
    if dense:  # the dense variant's off-block entries of A: one more stream per unit
        rows = [_uniform(_stream(spec, DENSE_KEY, g, j), (spec.d_in, spec.d_in), -1.0, 1.0) for g, j in keys]
        A = torch.empty(spec.hidden, spec.d_in)
        A[spec.fan_index().reshape(-1)] = torch.stack(rows, dim=1).reshape(spec.d_in * spec.units_per_input, spec.d_in)
        if spec.n_const:
            A_const = torch.stack([_uniform(_stream(spec, DENSE_KEY, 2, j), (spec.groups, spec.d_in), -1.0, 1.0)
                                   for j in range(spec.n_const)], dim=1)  # (groups, n_const, d_in)
            A[spec.const_index().reshape(-1)] = A_const.reshape(-1, spec.d_in)
        A[spec.fan_index().reshape(-1), torch.arange(spec.d_in).repeat_interleave(spec.units_per_input)] = head["u"].reshape(-1)
        out["A"] = A
    return out


def row_slices(rows: int, per_row: int, budget: int) -> list[slice]:
    """``rows`` output rows cut into consecutive blocks of at most ``budget`` entries at ``per_row``
    entries a row (at least one row a block): the blocks :func:`stream` is read in."""
    step = max(1, budget // max(per_row, 1))
    return [slice(r, min(rows, r + step)) for r in range(0, rows, step)]


def stream(spec: LayerSpec, blocks: list[slice]):
    """The pair's random values a block of output rows at a time, regenerated from the seed: for
    each of ``blocks`` (consecutive, in order, from row 0) a dict like :func:`generate`'s whose
    ``B`` holds only the block's rows (``first_row`` says which), with ``u`` and the constant units'
    ``beta`` (groups, n_const) whole; the fan-out units' A biases (pruned, drawn after B) are not
    drawn. Memory: one block of B, not the layer.

    Each unit's stream is read once, in order: its values are the same as :func:`generate`'s
    (CPU generators draw one value after another, so a stream read in pieces gives the pieces of
    the stream read whole; tested), and tickets rebuild bit-exactly."""
    fan, const, units = _heads(spec)
    b_bias = _uniform(_stream(spec, BIAS_KEY), (spec.d_out,), -1.0, 1.0)
    row = 0
    for rows in blocks:
        if rows.start != row or rows.stop <= rows.start or rows.stop > spec.d_out:
            raise ValueError(f"layer {spec.name!r}: stream blocks must be consecutive from row 0 within "
                             f"{spec.d_out} rows; got rows {rows.start}:{rows.stop} after row {row}")
        row = rows.stop
        yield dict(units, B=_rows(spec, fan, const, rows), b_bias=b_bias[rows], first_row=rows.start)


def _rows(spec: LayerSpec, fan: list, const: list, rows: slice) -> torch.Tensor:
    """B's output rows ``rows`` (d, hidden_group[, kh, kw]), the next values of every unit's stream."""
    d = rows.stop - rows.start
    parts = []
    for (gen, uk), (_, j) in zip(fan, _unit_keys(spec)):
        B = _uniform(gen, (d, spec.in_group, *_taps(spec)), -spec.scale, spec.scale)
        if spec.layout == "balanced":  # |B| with the sign that makes the product B u the unit's
            sign = unit_sign(j) * torch.sign(spec.per_output(uk, rows))  # (d, in_group)
            B = B.abs() * sign.reshape(*sign.shape, *([1] * (B.dim() - 2)))
        parts.append(B)
    B = [torch.stack(parts, dim=2).reshape(d, spec.in_group * spec.units_per_input, *_taps(spec))]
    for j, (gen, _) in enumerate(const):
        Bc = _uniform(gen, (d, *_taps(spec)), -spec.scale, spec.scale)
        B.append((Bc.abs() * unit_sign(j) if spec.layout == "balanced" else Bc).unsqueeze(1))
    return torch.cat(B, dim=1) if len(B) > 1 else B[0]


def units(spec: LayerSpec) -> dict[str, torch.Tensor]:
    """The fan-out layer's values without B: ``u`` (d_in, units_per_input), the constant units'
    ``beta`` (groups, n_const) and ``a_bias`` (hidden,) with beta at the constant units and NaN at
    the fan-out units (their A biases are pruned, and drawn after B in each unit's stream)."""
    return _heads(spec)[2]


def _heads(spec: LayerSpec):
    """Each unit's generator past its first values: (fan-out units' [(generator, u_k)], constant
    units' [(generator, beta_j)], {"u", "beta", "a_bias"} as :func:`units` gives them)."""
    keys = _unit_keys(spec)
    fan = []  # per unit: (its generator, past u; u)
    for g, j in keys:
        gen = _stream(spec, FAN_KEY, g, j)
        if spec.layout in SIGNED_UNITS:
            u = 1.0 - torch.rand((spec.d_in,), generator=gen, dtype=torch.float32)
            u = -u if g == 1 else u
        else:
            u = _uniform(gen, (spec.d_in,), -1.0, 1.0)
        fan.append((gen, u))
    const = []  # per constant unit: (its generator, past beta; beta)
    for j in range(spec.n_const):
        gen = _stream(spec, CONST_KEY, j)
        if spec.layout in SIGNED_UNITS:
            beta = 1.0 - torch.rand((spec.groups,), generator=gen, dtype=torch.float32)
        else:
            beta = _uniform(gen, (spec.groups,), -1.0, 1.0)
        const.append((gen, beta))
    u = torch.stack([f[1] for f in fan], dim=1)  # (d_in, upi)
    beta = torch.stack([c[1] for c in const], dim=1) if const else torch.zeros(spec.groups, 0)
    a_bias = torch.full((spec.hidden,), float("nan"))  # the fan-out units' are not drawn
    if const:
        a_bias[spec.const_index().reshape(-1)] = beta.reshape(-1)
    return fan, const, {"u": u, "beta": beta, "a_bias": a_bias}


def product_signs(spec: LayerSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``balanced`` layout's product signs: (d_in, units_per_input) for the fan-out units and
    (n_const,) for the constant units (:func:`unit_sign` of each unit's index in its group)."""
    fan = torch.tensor([unit_sign(j) for _, j in _unit_keys(spec)]).expand(spec.d_in, -1)
    return fan, torch.tensor([unit_sign(j) for j in range(spec.n_const)])


def groups(spec: LayerSpec, u: torch.Tensor) -> list[torch.Tensor]:
    """Bool masks (d_in, units_per_input) of the subset-sum groups of each input's units.

    Non-negative input: one group (the positive units; any negative ones are pruned). Otherwise
    two groups, positive and negative units, each giving one problem per target weight.
    """
    positive = u > 0
    if spec.input_nonneg:
        return [positive]
    return [positive, u < 0]
