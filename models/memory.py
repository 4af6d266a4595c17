"""Memory planned, not hoped for: what a run needs, checked against a budget before any solving.

The estimate counts what dominates (bytes):

* the random network as held: the fan-out variant holds no random values of B (its combine layers
  regenerate them from the seed a block at a time, :mod:`models.pruned`), only B's mask as bits
  (:mod:`models.masks`), u and A's biases with their masks; the dense variant holds its float32
  values (``LayerSpec.dense_params``) and bool masks;
* the solve phase's block transients: one block of B's values (float32) and its bool mask, the float64
  coefficients of at most ``block_problems`` problems (a few copies); with ``--n auto`` the layer's
  answers at the chosen n, kept packed (:class:`models.auto_n.Answers`: its masks' bits and
  :data:`ANSWER_BYTES` a problem);
* the solutions: the kept sums (float64, one per sign group of each weight), formed as each block of
  rows is solved; they are the collapsed form's weights, and the errors follow from them when asked
  (one layer at a time: reports and the certified bound, at most two float64 arrays of its size), so
  no error is held; the target's folded trace holds the target's own tensors where nothing was
  folded into them, float64 only where BatchNorm was (it is in the baseline: the plan is made after
  tracing) - verification computes the target's float64 outputs with it, its layers cast to float64
  one at a time, and takes float32 views of it and of the collapsed form likewise
  (:func:`models.fxgraph.cast_layers`);
* verification, per input: the float64 activations of the widest pair (fan-out output and its
  ReLU, hidden channels at the layer's input resolution), the unfolded input of its combine
  convolution (float64 convolutions on the CPU unfold the input: hidden x kh x kw values per
  output pixel, at most :data:`models.pruned.UNFOLD_BYTES` at once), the target's largest activation twice (residual branches keep earlier ones
  alive) and its largest unfolded convolution input; once per batch a block of the largest combine
  layer regenerated (values, weight * mask and its float64 cast), and the weight * mask products
  verification keeps between batches (at most :data:`models.pruned.MASK_CACHE_BYTES`; the
  adversarial search keeps none for its backward pass).

Verification runs in batches sized to what is left of the budget and small enough to run from
cache (at least one input): the materialised network's widest float32 hidden units within
:data:`CACHE_BYTES` (LeNet-5 on 10,000 inputs: 1.5 s at 64 inputs a batch, 3.8 s at 512), the
target's and the collapsed form's widest float64 activation within :data:`COLLAPSED_CACHE_BYTES`. A run whose resident part alone exceeds the budget, or that
cannot verify one input, is refused with what it needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch.fx as fx

from .errors import LotteryError
from .layers import TargetLayer
from .pruned import CAST_BLOCK, MASK_CACHE_BYTES, UNFOLD_BYTES
from .random_net import LayerSpec

#: the default budget: this share of the memory available when the run starts
DEFAULT_SHARE = 0.7
#: at most this many inputs per verification batch (larger gains nothing)
MAX_VERIFY_BATCH = 512
#: batches of the materialised network hold at most this many bytes of the widest pair's float32
#: hidden units (at least one input)
CACHE_BYTES = 8 << 20
#: batches of the target and the collapsed form hold at most this many bytes of their widest float64
#: activation (at least one input): a CIFAR ResNet-20's float64 forwards on 514 inputs take 2.2 s in
#: batches of 4 or 8 (1 MiB), 6.1 s in batches of 64 or 170
COLLAPSED_CACHE_BYTES = 1 << 20
#: --n auto keeps each problem's answer at the chosen n in this many bytes beside its masks' bits:
#: the error (float64), status, fallback and presolve flags, and its index in a partial block
ANSWER_BYTES = 8 + 3 + 4
GIB = 2**30


class MemoryPlanError(LotteryError, ValueError):
    """The run cannot fit the memory budget (the message says what it needs and what to change)."""


def default_budget() -> int:
    """DEFAULT_SHARE of the memory available now (psutil), in bytes."""
    import psutil

    return int(DEFAULT_SHARE * psutil.virtual_memory().available)


def process_bytes() -> int:
    """Resident memory of this process now."""
    import psutil

    return int(psutil.Process().memory_info().rss)


def layer_shapes(target: fx.GraphModule) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """(input shape, output shape) of every call_module node, from a ShapeProp'ed graph."""
    shapes = {}
    for node in target.graph.nodes:
        if node.op == "call_module" and "tensor_meta" in node.meta:
            arg = node.args[0]
            shapes[node.target] = (tuple(arg.meta["tensor_meta"].shape), tuple(node.meta["tensor_meta"].shape))
    return shapes


def _numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape[1:])  # without the batch dimension


@dataclass
class MemoryPlan:
    """What the run needs (bytes) and the verification batch that fits the budget."""

    budget: int
    baseline: int  # this process before the construction
    random_network: int  # what the pairs hold: masks (B's as bits), u and A's biases; the dense variant's values
    solve_transient: int  # the solve phase's peak (a block of problems, --n auto's answers) beyond what the pairs hold at its end
    targets: int  # the kept sums (the collapsed form's weights)
    verify_per_input: int  # the materialised network, per input
    verify_fixed: int  # per batch, independent of its size
    verify_batch: int  # inputs per batch of the target and the collapsed form
    collapsed_per_input: int = 0  # the target and the collapsed form, per input
    materialised_batch: int = 1  # inputs per batch of the materialised network

    def needs(self, inputs: int = 1, collapsed_inputs: int = 1) -> int:
        fixed = self.baseline + self.random_network + self.targets
        return fixed + max(self.solve_transient, self.verify_fixed + inputs * self.verify_per_input,
                           collapsed_inputs * self.collapsed_per_input)

    def describe(self) -> str:
        return (f"random network {self.random_network / GIB:.2f} GiB, solving {self.solve_transient / GIB:.2f} GiB, "
                f"kept sums {self.targets / GIB:.2f} GiB, verification {self.verify_per_input / 2**20:.1f} MiB "
                f"per input + {self.verify_fixed / GIB:.2f} GiB, this process {self.baseline / GIB:.2f} GiB")


def plan(layers: list[TargetLayer], specs: list[LayerSpec], shapes: dict, variant: str, block_problems: int,
         budget: int | None = None, baseline: int | None = None, searched: bool = False) -> MemoryPlan:
    """The run's memory plan; raises MemoryPlanError before any solving when it cannot fit.
    ``searched``: n is searched per layer (``--n auto``), whose answers at the chosen n are kept."""
    budget = default_budget() if budget is None else int(budget)
    baseline = process_bytes() if baseline is None else int(baseline)
    random_network = cast = products = sums = 0
    solving: list[tuple[int, int]] = []  # per layer: what the layers up to it hold, and its solve's transients
    per_input = hidden_bytes = target_per_input = 0
    widest_target = max((_numel(s) for io in shapes.values() for s in io), default=0)
    for spec in specs:
        kh, kw = spec.kernel
        b_entries = spec.d_out * spec.hidden_group * kh * kw
        units = spec.d_in * spec.units_per_input + spec.hidden  # u and A's biases
        weights = spec.d_out * spec.in_group * kh * kw
        sums += 8 * weights * (1 if spec.input_nonneg else 2)
        if variant == "dense":
            random_network += 4 * spec.dense_params() + b_entries + units + spec.hidden * spec.d_in
        else:
            random_network += 5 * units + (b_entries + 7) // 8
        # solving a layer: per block of rows its B values (float32) and bool mask, and the float64
        # coefficients of the block's problems (about three copies)
        upi = spec.units_per_input
        block = min(block_problems, spec.d_out * spec.in_group * kh * kw * 2)
        block_rows = max(1, min(spec.d_out, block // max(1, spec.in_group * kh * kw)))
        problems = weights * (1 if spec.input_nonneg else 2) + (spec.d_out if spec.has_bias else 0)
        answers = problems * ((upi + 7) // 8 + ANSWER_BYTES) if searched else 0
        # layers are solved in order: the layers after this one hold nothing yet while it is solved
        solving.append((random_network + sums, 5 * block_rows * spec.hidden_group * kh * kw + 3 * 8 * block * upi
                        + answers))
        # a block of rows regenerated (float32 values and weight * mask) and cast to float64
        block_entries = b_entries if spec.groups > 1 else min(b_entries, CAST_BLOCK + b_entries // spec.d_out)
        cast = max(cast, 16 * block_entries, 12 * weights)  # or one layer cast to float32 (views of the float64 forms)
        products += 8 * b_entries  # kept between batches, in the widest dtype verified (float64)
        in_shape, out_shape = shapes[spec.name]
        if spec.kind == "embedding":  # per token only its own units: the kept columns of B gathered
            spatial = out_spatial = _numel(in_shape) * spec.units_per_input * spec.d_out // max(spec.hidden, 1)
        elif spec.kind == "linear":  # features last: every leading position (token) has its hidden units
            spatial = out_spatial = _numel(in_shape) // max(in_shape[-1], 1)
        else:
            spatial = _numel(in_shape) // max(in_shape[1], 1) if len(in_shape) > 2 else 1
            out_spatial = _numel(out_shape) // max(out_shape[1], 1) if len(out_shape) > 2 else 1
        # float64 combine convolutions unfold at most UNFOLD_BYTES of their input at once (groups: all of it)
        unfolded = spec.hidden_group * kh * kw * out_spatial if spec.kind == "conv2d" else 0
        if spec.groups == 1:
            unfolded = min(unfolded, UNFOLD_BYTES // 8)
        target_unfolded = spec.in_group * kh * kw * out_spatial if spec.kind == "conv2d" else 0
        hidden_bytes = max(hidden_bytes, 4 * spec.hidden * spatial)
        per_input = max(per_input, 8 * (2 * spec.hidden * spatial + unfolded + target_unfolded + _numel(out_shape)))
        target_per_input = max(target_per_input, 8 * target_unfolded)
    per_input += 8 * 2 * widest_target
    target_per_input += 8 * 3 * widest_target  # float64: its largest activation, kept twice, and the output
    # the folded trace (the target's own tensors, one per layer) is in the baseline; verification adds no
    # copy of it; the errors are formed from the kept sums a layer at a time (two float64 arrays of the largest)
    targets = sums
    # the solve phase's peak beyond what every layer holds at its end
    solve_transient = max((held + transient - (random_network + sums) for held, transient in solving), default=0)
    solve_transient = max(0, solve_transient)
    largest = max((layer.num_params() for layer in layers), default=0)
    fixed = max(cast, 2 * 8 * largest) + min(products, MASK_CACHE_BYTES)
    out = MemoryPlan(budget, baseline, random_network, solve_transient, targets, per_input, fixed, 0,
                     target_per_input, 0)
    room = budget - baseline - random_network - targets
    # batches whose widest activation stays cache-resident (at least one input): the materialised
    # network's float32 hidden units, the target's and the collapsed form's float64 activations
    cached = max(1, CACHE_BYTES // max(hidden_bytes, 1))
    batch = min(MAX_VERIFY_BATCH, cached, (room - fixed) // max(per_input, 1)) if room > fixed else 0
    collapsed = min(MAX_VERIFY_BATCH, max(1, COLLAPSED_CACHE_BYTES // max(8 * widest_target, 1)),
                    room // max(target_per_input, 1)) if room > 0 else 0
    if batch < 1 or collapsed < 1 or out.needs(1) > budget:
        raise MemoryPlanError(
            f"this run needs about {out.needs(1) / GIB:.2f} GiB ({out.describe()}), above the memory budget of "
            f"{budget / GIB:.2f} GiB (--memory-limit; default {DEFAULT_SHARE:.0%} of the available memory); "
            f"use a smaller --n{', --variant fanout' if variant == 'dense' else ''}, a smaller --input-shape or "
            f"--block-problems, or a larger machine")
    out.verify_batch, out.materialised_batch = int(collapsed), int(batch)
    return out
