"""The per-weight subset-sum problems of one pair, and the pair's masks back from their solutions.

For target weight W[o, i(, p, q)] and each sign group g of input i's fan-out units the
coefficients are ``c_k = B[o, (i, k)(, p, q)] * u[i, k]`` for k in g (for a grouped convolution
i is the i-th input of o's conv group, and B's columns are that group's hidden units); for bias b[o] they are
``B[o, const_k(, tap)] * relu(beta_k)`` (see :mod:`models.random_net` for the units). The hidden
units of input i are shared by every output o: each output picks its own subset, and unit
(i, k) is kept in A iff some output keeps it. :func:`coefficients` is the one place this
formula is written; :func:`errors_from_masks` evaluates it again on saved masks.
"""

from __future__ import annotations

import numpy as np
import torch

import solver

from .layers import TargetLayer
from .masks import PackedMask, mask_rows
from .random_net import LayerSpec, groups, row_slices, stream

#: coefficients held at once by :func:`kept_sums` (float64: 128 MiB)
SUM_BLOCK = 1 << 24


def b_rows(values: dict[str, torch.Tensor], rows: slice) -> torch.Tensor:
    """B's output rows ``rows`` from ``values``: all of B (:func:`models.random_net.generate`) or a
    block of its rows starting at ``values["first_row"]`` (:func:`models.random_net.stream`)."""
    first = values.get("first_row", 0)
    if rows.start < first or rows.stop > first + len(values["B"]):
        raise IndexError(f"rows {rows.start}:{rows.stop} are not in the block of B's rows {first}:{first + len(values['B'])}")
    return values["B"][rows.start - first:rows.stop - first]


def coefficients(spec: LayerSpec, values: dict[str, torch.Tensor], rows: slice) -> torch.Tensor:
    """Float64 products ``C[o, c, p, q, k] = B[o, (c, k), p, q] * u[i, k]`` for the output rows ``rows``,
    input i = c-th of o's conv group."""
    d = rows.stop - rows.start
    upi, (kh, kw) = spec.units_per_input, spec.kernel
    B = b_rows(values, rows).double()
    if spec.kind != "conv2d":  # no kernel taps
        B = B[:, :, None, None]
    Bw = B[:, :spec.in_group * upi].reshape(d, spec.in_group, upi, kh, kw).permute(0, 1, 3, 4, 2)
    return Bw * spec.per_output(values["u"].double(), rows)[:, :, None, None, :]


def bias_coefficients(spec: LayerSpec, values: dict[str, torch.Tensor], rows: slice) -> torch.Tensor:
    """Float64 products ``B[o, const_k, tap] * relu(beta_k)`` (d, n_const) for the output rows ``rows``
    (beta of the constant units of o's conv group)."""
    n_fan = spec.in_group * spec.units_per_input
    B = b_rows(values, rows).double()
    if spec.kind != "conv2d":  # no kernel taps
        B = B[:, :, None, None]
    p, q = spec.const_tap
    beta = values["a_bias"][spec.const_index()].double()  # (groups, n_const)
    return B[:, n_fan:, p, q] * torch.relu(beta[spec.group_of(rows)])


def build_problems(layer: TargetLayer, spec: LayerSpec, values: dict[str, torch.Tensor], rows: slice | None = None):
    """The subset-sum problems of one pair for the target rows (outputs) ``rows``.

    Returns (targets (P,), coefficients (P, width), lengths (P,), scatter) where ``scatter``
    maps solution masks back to the pair's masks (see :func:`masks_from_solutions`).
    Problems are built a block of rows at a time so memory is bounded by the block, not the layer.
    """
    rows = rows or slice(0, spec.d_out)
    d = rows.stop - rows.start
    kh, kw = spec.kernel
    C = coefficients(spec, values, rows).numpy()
    W = layer.weight64(rows).reshape(d, spec.in_group, kh, kw).numpy()
    targets, coeffs, lengths, parts = [], [], [], []
    for g, member in enumerate(groups(spec, values["u"])):
        member = spec.per_output(member, rows).numpy()  # (d, in_group, upi)
        perm = np.argsort(~member, axis=-1, kind="stable")  # group members first, in order
        count = member.sum(axis=-1)  # (d, in_group)
        width = int(count.max()) if count.size else 0
        perm = perm[..., :width]
        Cg = np.take_along_axis(C, perm[:, :, None, None, :], axis=-1)
        targets.append(W.reshape(-1))
        coeffs.append(Cg.reshape(-1, width))
        lengths.append(np.broadcast_to(count[:, :, None, None], W.shape).reshape(-1))
        parts.append(("weight", g, perm))
    del C
    if spec.has_bias:
        targets.append(layer.bias[rows].numpy())
        coeffs.append(bias_coefficients(spec, values, rows).numpy())
        lengths.append(np.full(d, spec.n_const))
        parts.append(("bias", 0, None))
    width = max(c.shape[1] for c in coeffs)
    coeffs = [np.pad(c, ((0, 0), (0, width - c.shape[1]))) for c in coeffs]
    sizes = [len(t) for t in targets]
    return (np.concatenate(targets), np.concatenate(coeffs), np.concatenate(lengths).astype(np.int64),
            (parts, sizes, d))


def masks_from_solutions(spec: LayerSpec, scatter, res: solver.SolveResult):
    """B's mask and the per-weight / per-bias errors for the block of rows the problems came from.

    Returns (b_mask (d, hidden_group, kh, kw) bool, weight_error (d, in_group, kh, kw), bias_error (d,) or None).
    """
    parts, sizes, d = scatter
    upi = spec.units_per_input
    n_fan = spec.in_group * upi
    kh, kw = spec.kernel
    b_mask = np.zeros((d, spec.hidden_group, kh, kw), dtype=bool)
    fan = np.zeros((d, spec.in_group, kh, kw, upi), dtype=bool)
    weight_error = np.zeros((d, spec.in_group, kh, kw))
    bias_error = None
    start = 0
    for (kind, _, perm), size in zip(parts, sizes):
        sol = res.masks[start:start + size]
        err = res.errors[start:start + size]
        start += size
        if kind == "weight":
            width = perm.shape[-1]
            sol = sol[:, :width].reshape(d, spec.in_group, kh, kw, width)
            scattered = np.zeros_like(fan)
            np.put_along_axis(scattered, np.broadcast_to(perm[:, :, None, None, :], sol.shape), sol, axis=-1)
            fan |= scattered
            weight_error = np.maximum(weight_error, err.reshape(weight_error.shape))
        else:
            p, q = spec.const_tap
            b_mask[:, n_fan:, p, q] = sol[:, :spec.n_const]
            bias_error = err
    b_mask[:, :n_fan] = fan.transpose(0, 1, 4, 2, 3).reshape(d, n_fan, kh, kw)
    return b_mask, weight_error, bias_error


def used_units(spec: LayerSpec, rows: slice, b_mask: np.ndarray) -> np.ndarray:
    """(groups, hidden_group) bool: the hidden units that some output in ``rows`` keeps in B
    (``b_mask``: those rows of B's mask, (d, hidden_group, kh, kw))."""
    used = np.zeros((spec.groups, spec.hidden_group), dtype=bool)
    group = spec.group_of(rows).numpy()
    for g in np.unique(group):
        used[g] = b_mask[group == g].any(axis=(0, 2, 3))
    return used


def pair_masks(spec: LayerSpec, b_mask: PackedMask, used: np.ndarray) -> dict[str, torch.Tensor | PackedMask]:
    """All masks of a pair from B's (packed, (d_out, hidden_group, kh, kw)) and the units some output
    keeps (:func:`used_units` over all rows): unit (i, k) is kept in A iff some output of its conv
    group keeps it."""
    n_fan = spec.in_group * spec.units_per_input
    u_mask = used[:, :n_fan].reshape(spec.d_in, spec.units_per_input)  # (groups, hidden_group) -> the groups' inputs
    a_bias_mask = np.zeros(spec.hidden, dtype=bool)
    a_bias_mask[spec.const_index().reshape(-1).numpy()] = used[:, n_fan:].reshape(-1)
    if spec.kind != "conv2d":
        b_mask = b_mask.reshape(spec.d_out, spec.hidden_group)
    return {"u": torch.from_numpy(np.ascontiguousarray(u_mask)), "a_bias": torch.from_numpy(a_bias_mask), "B": b_mask}


def sum_blocks(spec: LayerSpec) -> list[slice]:
    """Output rows cut so that a block's coefficients are about ``SUM_BLOCK`` values."""
    kh, kw = spec.kernel
    return row_slices(spec.d_out, spec.in_group * kh * kw * spec.units_per_input, SUM_BLOCK)


def block_sums(spec: LayerSpec, values: dict[str, torch.Tensor], rows: slice,
               b_mask: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """The kept sums of the output rows ``rows`` (float64): per sign group (d, in_group, kh, kw), and
    the kept bias (d,) or None; ``values`` holds those rows of B (:func:`models.random_net.stream`),
    ``b_mask`` their mask (bool, (d, hidden_group, kh, kw)). The one place the kept sums are formed:
    the solve phase forms them block by block as the masks come, a rebuilt ticket from its masks."""
    kh, kw = spec.kernel
    n_fan = spec.in_group * spec.units_per_input
    C = coefficients(spec, values, rows)
    Bm = b_mask.reshape(-1, spec.hidden_group, kh, kw)
    kept = Bm[:, :n_fan].reshape(-1, spec.in_group, spec.units_per_input, kh, kw).permute(0, 1, 3, 4, 2)
    sums = [(C * (kept & spec.per_output(member, rows)[:, :, None, None, :])).sum(dim=-1)
            for member in groups(spec, values["u"])]
    bias = None
    if spec.has_bias:
        p, q = spec.const_tap
        bias = (bias_coefficients(spec, values, rows) * Bm[:, n_fan:, p, q]).sum(dim=1)
    return sums, bias


def empty_sums(spec: LayerSpec) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """Zero kept sums of a pair, filled a block of rows at a time (:func:`set_rows`): one float64
    tensor (d_out, in_group, kh, kw) per sign group (:func:`models.random_net.groups`), and the kept
    bias (d_out,) or None."""
    kh, kw = spec.kernel
    sums = [torch.zeros((spec.d_out, spec.in_group, kh, kw), dtype=torch.float64)
            for _ in range(1 if spec.input_nonneg else 2)]
    return sums, torch.zeros(spec.d_out, dtype=torch.float64) if spec.has_bias else None


def set_rows(kept: tuple[list[torch.Tensor], torch.Tensor | None], rows: slice,
             block: tuple[list[torch.Tensor], torch.Tensor | None]) -> None:
    """Write a block's kept sums (:func:`block_sums`) into the rows ``rows`` of a pair's (:func:`empty_sums`)."""
    (sums, bias), (part_sums, part_bias) = kept, block
    for total, part in zip(sums, part_sums):
        total[rows] = part
    if bias is not None:
        bias[rows] = part_bias


def kept_sums(spec: LayerSpec, masks: dict[str, torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """What the pruned pair computes, in float64: per sign group the kept coefficient sums
    (d_out, d_in, kh, kw) - the pair maps an input v to ``S_0 relu(v) - S_1 relu(-v)`` (just
    ``S_0 v`` for a non-negative input) - and the bias it adds (d_out,) or None. The random values
    are regenerated from the seed a block of rows at a time (:func:`models.random_net.stream`), so
    memory beyond the result is about ``SUM_BLOCK`` coefficients."""
    kept = empty_sums(spec)
    blocks = sum_blocks(spec)
    for rows, values in zip(blocks, stream(spec, blocks)):
        set_rows(kept, rows, block_sums(spec, values, rows, mask_rows(masks["B"], rows)))
    return kept


def weight_errors(weight: torch.Tensor, sums: list[torch.Tensor]) -> np.ndarray:
    """Per-weight errors in float64, max over the sign groups, in ``weight``'s shape, of a pair whose
    kept sums are ``sums`` (:func:`block_sums`) against the target's ``weight`` (any float dtype: the
    differences are formed in float64, exactly as from its float64 values). Formed in place: one
    float64 array the weight's size, and one more for a second sign group."""
    err = sums[0].reshape(weight.shape) - weight  # float64 (type promotion converts the weight exactly)
    err.abs_()
    if len(sums) > 1:
        other = torch.empty_like(err)
        for s in sums[1:]:
            torch.sub(s.reshape(weight.shape), weight, out=other).abs_()
            torch.maximum(err, other, out=err)
    return err.numpy()


def bias_errors(bias: torch.Tensor | None, kept_bias: torch.Tensor | None) -> np.ndarray | None:
    """Per-bias errors in float64 (d_out,) of a pair whose kept bias is ``kept_bias``, or None (no bias)."""
    return None if kept_bias is None else (bias - kept_bias).abs().numpy()


def errors_from_masks(layer: TargetLayer, spec: LayerSpec,
                      masks: dict[str, torch.Tensor]) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-weight errors (max over the sign groups) and per-bias errors, in float64, from a pair's
    masks and its random values regenerated from the seed: what a ticket's network really computes,
    whatever solved it."""
    sums, bias = kept_sums(spec, masks)
    return weight_errors(layer.weight, sums), bias_errors(layer.bias, bias)
