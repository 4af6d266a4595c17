"""From target layers to subset-sum problems, through :func:`solver.solve`, to masks.

For target weight W[o, i(, p, q)] and each sign group g of input i's units (DESIGN.md 1.1-1.2)
the coefficients are ``c_k = B[o, (i, k)(, p, q)] * u[i, k]`` for k in g; for bias b[o] they are
``B[o, const_k(, tap)] * relu(beta_k)``. The hidden units of input i are shared by every output
o: each output picks its own subset, and unit (i, k) is kept in A iff some output keeps it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.fx as fx
from torch.fx.passes.shape_prop import ShapeProp

import solver

from .graph import TargetLayer, UnsupportedModelError
from .random_net import LayerSpec, generate, groups, layer_seed


@dataclass
class LayerSolution:
    """Masks and errors of one pair."""

    masks: dict[str, torch.Tensor]  # "u" (d_in, upi), "a_bias" (hidden,), "B" like B: bool
    weight_error: np.ndarray  # (d_out, d_in[, kh, kw]): max over the sign groups
    bias_error: np.ndarray | None  # (d_out,)
    status_counts: dict[str, int]
    seconds: float
    backend: str
    problems: int
    presolved: int = 0  # problems settled by the solver's exact presolve, not the backend

    def kept(self) -> int:
        return int(sum(int(m.sum()) for m in self.masks.values()))


@dataclass
class ConstructOptions:
    """Settings of a construction (recorded in the report and the ticket)."""

    n: int = 21  # coefficients per subset-sum problem
    objective: str = "min-error"
    eps: float | None = None
    backend: str = "auto"
    seed: int = 0
    layout: str = "fixed-sign"
    scale_policy: str = "max"  # "max": s = margin * max|w|; "rms": s = margin * rms(w)
    scale_margin: float | None = None  # None: 1.5 for "max", 5 for "rms"
    scales: dict[str, float] = field(default_factory=dict)  # per-layer overrides of the B scale
    workers: int | None = None
    solver_options: dict[str, Any] = field(default_factory=dict)  # time_limit, resolution, device, executor...
    block_problems: int = 1 << 17  # problems built and solved at once (bounds memory)
    progress: bool | None = None


DEFAULT_MARGINS = {"max": 1.5, "rms": 5.0}


def resolved_margin(options: "ConstructOptions") -> float:
    """The scale margin in force: the given one, else the policy's default."""
    if options.scale_margin is not None:
        return float(options.scale_margin)
    return DEFAULT_MARGINS.get(options.scale_policy, 1.0)


def input_shapes(target: fx.GraphModule, example: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """Shape of the input of every call_module node (one example, batch dim included)."""
    ShapeProp(target).propagate(example.double())
    shapes = {}
    for node in target.graph.nodes:
        if node.op == "call_module":
            arg = node.args[0]
            shapes[node.target] = tuple(arg.meta["tensor_meta"].shape)
    return shapes


def const_tap(layer: TargetLayer, in_shape: tuple[int, ...]) -> tuple[int, int]:
    """A kernel tap that falls inside the image for every output pixel.

    The constant channels give the bias through B's taps; at borders under zero padding some
    taps read padding, so only a tap that never does is kept (closest to the kernel centre).
    """
    tap = []
    for axis in range(2):
        size = in_shape[2 + axis]
        k = layer.kernel[axis]
        s, p, d = layer.conv["stride"][axis], layer.conv["padding"][axis], layer.conv["dilation"][axis]
        out = (size + 2 * p - d * (k - 1) - 1) // s + 1
        ok = [j for j in range(k) if j * d - p >= 0 and (out - 1) * s - p + j * d <= size - 1]
        if not ok:
            raise UnsupportedModelError(
                f"conv layer {layer.name!r}: no kernel tap stays inside the {size}-pixel input for every "
                f"output pixel (kernel {k}, stride {s}, padding {p}, dilation {d}), so a constant channel "
                f"cannot carry the bias exactly at the borders"
            )
        tap.append(min(ok, key=lambda j: abs(j - (k - 1) / 2)))
    return tuple(tap)


def make_spec(layer: TargetLayer, index: int, options: ConstructOptions, in_shape: tuple[int, ...]) -> LayerSpec:
    if options.layout == "paper":
        scale = 1.0
    elif layer.name in options.scales:
        scale = float(options.scales[layer.name])
    else:
        values = layer.weight.reshape(-1)
        if layer.bias is not None:
            values = torch.cat([values, layer.bias])
        if options.scale_policy == "max":
            size = float(values.abs().max())
        elif options.scale_policy == "rms":
            size = float(values.pow(2).mean().sqrt())
        else:
            raise ValueError(f"`scale_policy` must be 'max' or 'rms'; got {options.scale_policy!r}")
        scale = resolved_margin(options) * size if size > 0 else 1.0
    conv = layer.conv
    return LayerSpec(
        name=layer.name, kind=layer.kind, d_in=layer.d_in, d_out=layer.d_out, kernel=layer.kernel,
        stride=conv.get("stride", (1, 1)), padding=conv.get("padding", (0, 0)),
        dilation=conv.get("dilation", (1, 1)), n=options.n, layout=options.layout,
        input_nonneg=layer.input_nonneg, has_bias=layer.bias is not None, scale=scale,
        seed=layer_seed(options.seed, index),
        const_tap=const_tap(layer, in_shape) if layer.kind == "conv2d" and layer.bias is not None else (0, 0),
    )


def build_problems(layer: TargetLayer, spec: LayerSpec, values: dict[str, torch.Tensor], rows: slice | None = None):
    """The subset-sum problems of one pair for the target rows (outputs) ``rows``.

    Returns (targets (P,), coefficients (P, width), lengths (P,), scatter) where ``scatter``
    maps solution masks back to the pair's masks (see :func:`masks_from_solutions`).
    Problems are built a block of rows at a time so memory is bounded by the block, not the layer.
    """
    rows = rows or slice(0, spec.d_out)
    d = rows.stop - rows.start
    upi = spec.units_per_input
    n_fan = spec.d_in * upi
    u = values["u"].double()
    B = values["B"][rows].double()
    if spec.kind == "linear":
        B = B[:, :, None, None]
    kh, kw = spec.kernel
    # coefficients C[o, i, p, q, k] = B[o, (i, k), p, q] * u[i, k]
    Bw = B[:, :n_fan].reshape(d, spec.d_in, upi, kh, kw).permute(0, 1, 3, 4, 2)
    C = (Bw * u[None, :, None, None, :]).numpy()
    W = layer.weight[rows].reshape(d, spec.d_in, kh, kw).numpy()
    targets, coeffs, lengths, parts = [], [], [], []
    for g, member in enumerate(groups(spec, values["u"])):
        member = member.numpy()
        perm = np.argsort(~member, axis=1, kind="stable")  # group members first, in order
        count = member.sum(axis=1)  # (d_in,)
        width = int(count.max()) if count.size else 0
        perm = perm[:, :width]
        Cg = np.take_along_axis(C, perm[None, :, None, None, :], axis=-1)
        targets.append(W.reshape(-1))
        coeffs.append(Cg.reshape(-1, width))
        lengths.append(np.broadcast_to(count[None, :, None, None], W.shape).reshape(-1))
        parts.append(("weight", g, perm))
    del C
    if spec.has_bias:
        p, q = spec.const_tap
        beta = torch.relu(values["a_bias"][n_fan:].double())
        targets.append(layer.bias[rows].numpy())
        coeffs.append((B[:, n_fan:, p, q] * beta[None, :]).numpy())
        lengths.append(np.full(d, spec.n_const))
        parts.append(("bias", 0, None))
    width = max(c.shape[1] for c in coeffs)
    coeffs = [np.pad(c, ((0, 0), (0, width - c.shape[1]))) for c in coeffs]
    sizes = [len(t) for t in targets]
    return (np.concatenate(targets), np.concatenate(coeffs), np.concatenate(lengths).astype(np.int64),
            (parts, sizes, d))


def masks_from_solutions(spec: LayerSpec, scatter, res: solver.SolveResult):
    """B's mask and the per-weight / per-bias errors for the block of rows the problems came from.

    Returns (b_mask (d, hidden, kh, kw) bool, weight_error (d, d_in, kh, kw), bias_error (d,) or None).
    """
    parts, sizes, d = scatter
    upi = spec.units_per_input
    n_fan = spec.d_in * upi
    kh, kw = spec.kernel
    b_mask = np.zeros((d, spec.hidden, kh, kw), dtype=bool)
    fan = np.zeros((d, spec.d_in, kh, kw, upi), dtype=bool)
    weight_error = np.zeros((d, spec.d_in, kh, kw))
    bias_error = None
    start = 0
    for (kind, _, perm), size in zip(parts, sizes):
        sol = res.masks[start:start + size]
        err = res.errors[start:start + size]
        start += size
        if kind == "weight":
            width = perm.shape[1]
            sol = sol[:, :width].reshape(d, spec.d_in, kh, kw, width)
            scattered = np.zeros_like(fan)
            np.put_along_axis(scattered, np.broadcast_to(perm[None, :, None, None, :], sol.shape), sol, axis=-1)
            fan |= scattered
            weight_error = np.maximum(weight_error, err.reshape(weight_error.shape))
        else:
            p, q = spec.const_tap
            b_mask[:, n_fan:, p, q] = sol[:, :spec.n_const]
            bias_error = err
    b_mask[:, :n_fan] = fan.transpose(0, 1, 4, 2, 3).reshape(d, n_fan, kh, kw)
    return b_mask, weight_error, bias_error


def pair_masks(spec: LayerSpec, b_mask: np.ndarray) -> dict[str, torch.Tensor]:
    """All masks of a pair from B's: unit (i, k) is kept in A iff some output keeps it."""
    upi = spec.units_per_input
    n_fan = spec.d_in * upi
    kh, kw = spec.kernel
    used = b_mask.any(axis=(0, 2, 3))  # (hidden,)
    u_mask = used[:n_fan].reshape(spec.d_in, upi)
    a_bias_mask = np.zeros(spec.hidden, dtype=bool)
    a_bias_mask[n_fan:] = used[n_fan:]
    if spec.kind == "linear":
        b_mask = b_mask[:, :, 0, 0]
    return {"u": torch.from_numpy(np.ascontiguousarray(u_mask)), "a_bias": torch.from_numpy(a_bias_mask),
            "B": torch.from_numpy(np.ascontiguousarray(b_mask))}


def solve_layer(layer: TargetLayer, spec: LayerSpec, options: ConstructOptions, index: int = 0,
                store=None) -> LayerSolution:
    """Draw the pair's random values and solve every problem of the layer, a block of target rows
    at a time (at most ``options.block_problems`` problems in memory); return the pair's masks.

    With a :class:`solver.store.ChunkStore`, solved chunks are kept on disk (keys
    ``layer{index}-rows{first row}-NNNNNN``) and read back on a rerun.
    """
    start = time.perf_counter()
    values = generate(spec)
    kh, kw = spec.kernel
    per_row = spec.d_in * kh * kw * len(groups(spec, values["u"])) + (1 if spec.has_bias else 0)
    rows_per_block = max(1, options.block_problems // max(per_row, 1))
    b_mask = np.zeros((spec.d_out, spec.hidden, kh, kw), dtype=bool)
    weight_error = np.zeros((spec.d_out, spec.d_in, kh, kw))
    bias_error = np.zeros(spec.d_out) if spec.has_bias else None
    counts = {"optimal": 0, "feasible": 0, "infeasible": 0}
    problems = presolved = 0
    backend = options.backend
    for r0 in range(0, spec.d_out, rows_per_block):
        rows = slice(r0, min(spec.d_out, r0 + rows_per_block))
        targets, coeffs, lengths, scatter = build_problems(layer, spec, values, rows)
        res = solver.solve(
            targets, coeffs, options.objective, eps=options.eps, backend=options.backend, lengths=lengths,
            workers=options.workers, progress=options.progress, store=store,
            store_key=f"layer{index}-rows{r0:07d}", **options.solver_options,
        )
        del targets, coeffs, lengths
        bm, we, be = masks_from_solutions(spec, scatter, res)
        b_mask[rows], weight_error[rows] = bm, we
        if be is not None:
            bias_error[rows] = be
        for key, value in res.status_counts().items():
            counts[key] += value
        problems += len(res)
        presolved += int(res.presolved.sum())
        backend = res.backend
    if spec.kind == "linear":
        weight_error = weight_error[:, :, 0, 0]
    return LayerSolution(masks=pair_masks(spec, b_mask), weight_error=weight_error, bias_error=bias_error,
                         status_counts=counts, seconds=time.perf_counter() - start, presolved=presolved,
                         backend=backend, problems=problems)
