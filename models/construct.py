"""The construction: trace the target, draw each pair's random values, solve every layer's
subset-sum problems with :func:`solver.solve`, and assemble the pruned random network.

    network = construct(target, input_shape, domain, options)  # a models.network.PrunedNetwork

Each parametrised layer of the target (Linear, Conv2d, BatchNorm folded in) becomes a pair
(fan-out A, ReLU, combine B; :mod:`models.random_net`), its weights and biases become
subset-sum problems (:mod:`models.problems`), and the solutions become the pair's masks
(:mod:`models.pruned`). Every parameter-free op of the target stays where it is.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
from torch.fx.passes.shape_prop import ShapeProp

import solver
from solver import Status

from .auto_n import choose_n, row_blocks
from .errors import UnsupportedModelError, UsageError
from .domain import InputDomain
from .layers import TargetLayer
from .network import LayerSolution, PrunedNetwork
from .trace import trace_target
from .memory import layer_shapes, plan
from .masks import MaskBuilder
from .problems import (bias_errors, block_sums, build_problems, empty_sums, masks_from_solutions, pair_masks, set_rows,
                       used_units, weight_errors)
from .pruned import assemble
from .options import ConstructOptions
from .random_net import VARIANTS, LayerSpec, layer_seed, stream


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (ru_maxrss; Linux reports kB)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def propagate_shapes(folded: fx.GraphModule, input_shape: tuple[int, ...], domain: InputDomain) -> dict:
    """(input shape, output shape) of every module call, for one example input of the domain."""
    ShapeProp(folded).propagate(domain.example(input_shape))
    return layer_shapes(folded)


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
        values = layer.weight64().reshape(-1)
        if layer.bias is not None:
            values = torch.cat([values, layer.bias])
        if options.scale_policy == "max":
            size = float(values.abs().max())
        else:  # "rms"
            size = float(values.pow(2).mean().sqrt())
        scale = options.margin * size if size > 0 else 1.0
    return LayerSpec(
        name=layer.name, kind=layer.kind, d_in=layer.in_channels, d_out=layer.d_out, kernel=layer.kernel,
        **layer.geometry, n=options.n_max if options.n == "auto" else options.n,
        layout=options.layout,
        input_nonneg=layer.input_nonneg, has_bias=layer.bias is not None, scale=scale,
        seed=layer_seed(options.seed, index),
        const_tap=const_tap(layer, in_shape) if layer.kind == "conv2d" and layer.bias is not None else (0, 0),
        groups=layer.groups,
    )


def solve_layer(layer: TargetLayer, spec: LayerSpec, options: ConstructOptions, index: int = 0,
                store=None, known: list | None = None) -> LayerSolution:
    """Solve every problem of the layer a block of target rows at a time (at most
    ``options.block_problems`` problems in memory), the block's random values regenerated from the
    seed (:func:`models.random_net.stream`: memory is bounded by the block); return the pair's masks.

    With a :class:`solver.store.ChunkStore`, solved chunks are kept on disk (keys
    ``layer{index}-rows{first row}-NNNNNN``) and read back on a rerun. ``known``: per row block
    (:func:`models.auto_n.row_blocks`), the problems already solved at this spec with these options
    and their answers (``--n auto``'s last step, :attr:`models.auto_n.NSearch.final`), or None; only
    the others are solved.
    """
    start = time.perf_counter()
    kh, kw = spec.kernel
    b_mask = MaskBuilder((spec.d_out, spec.hidden_group, kh, kw))  # packed as the blocks come: 2n bits a weight
    used = np.zeros((spec.groups, spec.hidden_group), dtype=bool)
    sums, bias_sum = kept = empty_sums(spec)  # formed as the masks come
    counts = {s.name.lower(): 0 for s in Status}
    problems = presolved = 0
    backend = options.backend
    blocks = row_blocks(spec, options.block_problems)
    for b, (rows, values) in enumerate(zip(blocks, stream(spec, blocks))):  # the values of a block at a time
        r0 = rows.start
        targets, coeffs, lengths, scatter = build_problems(layer, spec, values, rows)
        done = known[b].result() if known is not None and known[b] is not None else None
        if known is not None:
            known[b] = None  # taken over: its memory goes as the blocks are solved
        rest = np.arange(len(targets)) if done is None else _unanswered(len(targets), done[0])
        parts = [done] if done is not None else []
        try:
            if rest.size:
                parts.append((rest, solver.solve(targets[rest], coeffs[rest], backend=options.backend,
                                                 lengths=lengths[rest], store=store,
                                                 store_key=f"layer{index}-rows{r0:07d}", **vars(options.solve))))
        except solver.SolverInputError as exc:  # name the layer: the solver sees only numbers
            raise UnsupportedModelError(f"layer {spec.name!r}: {exc}") from exc
        res = parts[0][1] if len(parts) == 1 and len(parts[0][0]) == len(targets) else \
            solver.SolveResult.merged(len(targets), parts)
        del targets, coeffs, lengths, parts
        bm, we, be = masks_from_solutions(spec, scatter, res)
        b_mask.add(bm)
        used |= used_units(spec, rows, bm)
        block = block_sums(spec, values, rows, torch.from_numpy(bm))
        set_rows(kept, rows, block)
        _check_errors(layer, spec, rows, block, we, be)
        for key, value in res.status_counts().items():
            counts[key] += value
        problems += len(res)
        presolved += int(res.presolved.sum())
        backend = res.backend
    return LayerSolution(masks=pair_masks(spec, b_mask.done(), used), layer=layer, sums=sums, bias_sum=bias_sum,
                         status_counts=counts, seconds=time.perf_counter() - start, presolved=presolved,
                         backend=backend, problems=problems)


def _unanswered(count: int, answered: np.ndarray) -> np.ndarray:
    """The problems of 0..count-1 not in ``answered``, ascending, in O(count) (np.setdiff1d sorts: 6% of
    GPT-2 small's solve phase, where --n auto's answers cover every problem)."""
    if len(answered) == count:  # the answers are distinct problems of the block: all of them
        return np.arange(0)
    left = np.ones(count, dtype=bool)
    left[answered] = False
    return np.flatnonzero(left)


#: the solver's errors and those of the masks recomputed in float64 agree within this, relative to the
#: layer's coefficient scale (different summation orders of at most a few dozen float64 terms)
ERROR_AGREEMENT = 1e-9


def _check_errors(layer: TargetLayer, spec: LayerSpec, rows: slice, block: tuple[list[torch.Tensor], torch.Tensor | None],
                  weight_error: np.ndarray, bias_error: np.ndarray | None) -> None:
    """The errors the solver reported for a block of rows are those of its masks recomputed in float64
    from the regenerated values, ``block``'s kept sums (anything else is a bug in the solver or in the
    scatter of its masks)."""
    sums, bias = block
    we = weight_errors(layer.weight[rows], sums)
    worst = float(np.abs(we.reshape(weight_error.shape) - weight_error).max(initial=0.0))
    if bias is not None:
        worst = max(worst, float(np.abs(bias_errors(layer.bias[rows], bias) - bias_error).max(initial=0.0)))
    if worst > ERROR_AGREEMENT * max(1.0, spec.scale):
        raise RuntimeError(f"layer {spec.name!r} rows {rows.start}:{rows.stop}: the solver's errors differ by {worst:.3g} "
                           f"from those of its masks recomputed in float64 (a bug, not the input)")


def construct(target: nn.Module, input_shape: tuple[int, ...], domain: InputDomain | tuple[float, float],
              options: ConstructOptions, variant: str = "fanout", store=None,
              memory_budget: int | None = None) -> PrunedNetwork:
    """Trace the target, plan the memory (refusing before any solving what cannot fit), solve every
    layer's subset-sum problems, assemble the pruned network.

    ``store``: a :class:`solver.store.ChunkStore` that keeps solved chunks (resumable runs).
    ``memory_budget``: bytes (None: a share of the available memory, see :mod:`models.memory`)."""
    from tqdm.auto import tqdm

    if variant not in VARIANTS:
        raise UsageError(f"`variant` must be one of {list(VARIANTS)}; got {variant!r} instead")
    if not isinstance(domain, InputDomain):
        domain = InputDomain(*domain)  # a box until the trace shows whether the input is token ids
    start = time.perf_counter()
    folded, layers = trace_target(target, input_nonneg=domain.nonneg)
    domain = InputDomain.for_target(domain, layers)
    shapes = propagate_shapes(folded, input_shape, domain)
    # with --n auto the plan assumes n_max everywhere: what cannot fit is refused before any solving
    specs = [make_spec(layer, i, options, shapes[layer.name][0]) for i, layer in enumerate(layers)]
    memory = plan(layers, specs, shapes, variant, options.block_problems, memory_budget, searched=options.n == "auto")
    solutions = []
    bar = tqdm(list(zip(layers, specs)), desc="layers", unit="layer",
               disable=(not options.solve.progress) if options.solve.progress is not None else None)
    for i, (layer, spec) in enumerate(bar):
        bar.set_postfix_str(f"{spec.name}: {layer.weight.numel()} weights")
        search = None
        if options.n == "auto":
            search = choose_n(layer, spec, options, index=i, store=store)
            specs[i] = spec = replace(spec, n=search.n)
            search.reused = sum(len(k) for k in search.final if k is not None)
        solutions.append(solve_layer(layer, spec, options, index=i, store=store,
                                     known=search.final if search else None))
        solutions[-1].n_search = search.to_dict() if search else None
        del search  # its answers are the layer's masks now
    solve_s = time.perf_counter() - start
    solve_peak_mb = peak_rss_mb()  # peak so far: problems, solver and masks, before assembly
    t1 = time.perf_counter()
    pruned = assemble(folded, specs, [s.masks for s in solutions], variant)
    return PrunedNetwork(target=target, folded=folded, layers=layers, specs=specs, solutions=solutions,
                        pruned=pruned, input_shape=tuple(input_shape), domain=domain, options=options,
                        variant=variant, seconds={"solve": solve_s, "assemble": time.perf_counter() - t1},
                        memory={"peak_rss_mb_after_solve": solve_peak_mb}, plan=memory)


