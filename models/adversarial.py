"""A witness beside the certificate: search the input box for the x maximising |f(x) - g(x)|.

The certified bound is an upper bound on sup_x max_j |f(x)_j - g(x)_j| over the box; any input
evaluated gives a lower bound. This module looks for a large one by projected gradient ascent
(signed gradient steps, projection onto the box, the step halved every fifth of the run) in
float32 (fast convolutions; the gradient only steers) from seeded starts: the verified inputs
with the largest errors, the box's corners and uniform random points. For token inputs, which
have no gradient, it is a hill climb: each step changes one random position of every start to a
random id of the range and keeps the change where the error grew. Every start and the best
point of each path are then measured in float64; the largest is ``adversarial_output_error``, a
proven lower bound on the true sup (its witness input is returned), so certified / adversarial
says how loose the certificate can be at most.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import torch

from .collapsed import in_float32
from .network import PrunedNetwork
from .pruned import fixed_masks


def _errors(target64, pruned, x: torch.Tensor) -> torch.Tensor:
    """Per input: max over outputs of |f(x) - g(x)| (float64)."""
    diff = (target64(x) - pruned(x)).abs()
    return diff.reshape(len(x), -1).amax(dim=1)


def adversarial_search(c: PrunedNetwork, target64: torch.nn.Module | None = None, seeds: torch.Tensor | None = None,
                       restarts: int = 16, steps: int = 50, seed: int = 0, batch: int | None = None,
                       network: torch.nn.Module | None = None) -> dict[str, Any]:
    """Largest |f(x) - g(x)| found in the box; ``target64``: the target in float64 (default its
    folded trace ``c.folded``); ``seeds``: inputs to start from (e.g. the verified inputs with
    the largest errors); ``network``: the form of the pruned network g to search, float64 (the
    collapsed form, :mod:`models.collapsed`; default the materialised ``c.pruned``). Returns the
    error, its witness input (1, *input_shape) and the settings."""
    if target64 is None:
        target64 = c.folded
    network = c.pruned if network is None else network
    if c.domain.tokens:
        return _token_search(c, target64, network, seeds, restarts, steps, seed)
    start = time.perf_counter()
    lo, hi = c.domain.lo, c.domain.hi
    shape = c.input_shape
    gen = torch.Generator().manual_seed(seed)
    starts = [torch.full((1, *shape), lo), torch.full((1, *shape), hi)]
    if seeds is not None and len(seeds):
        starts.append(seeds[: max(restarts // 2, 1)].float())
    rand = max(restarts - sum(len(s) for s in starts), 0)
    starts.append(torch.rand((rand, *shape), generator=gen) * (hi - lo) + lo)
    x0 = torch.cat(starts).double()
    candidates, err = ascend(c, target64, network, x0, lo, hi, steps, batch)
    j = int(err.argmax())
    best_err, best_x = float(err[j]), candidates[j:j + 1].clone()
    return {"adversarial_output_error": best_err, "witness": best_x, "starts": len(x0), "steps": steps,
            "seed": seed, "seconds": time.perf_counter() - start}


def ascend(c: PrunedNetwork, target64: torch.nn.Module, network: torch.nn.Module, x0: torch.Tensor,
           lo: float | torch.Tensor, hi: float | torch.Tensor, steps: int,
           batch: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Projected signed-gradient ascent of |f - g| from each start of ``x0`` (float64) within [lo, hi]
    (numbers: the domain; tensors shaped as ``x0``: a box per start), in float32, ``batch`` starts at
    a time; returns (candidates, their float64 errors): the starts, then per start the point of its
    path with the largest float32 error."""
    flat = bool(torch.as_tensor(hi - lo).max() == 0)
    boxes = torch.is_tensor(lo)
    lo32, hi32 = (lo.float(), hi.float()) if boxes else (lo, hi)
    target32 = in_float32(target64, c.layers)
    # the materialised network evaluates float32 inputs in float32 as it is (its values are float32)
    pruned = network if network is c.pruned else in_float32(network, c.layers)
    params = list(pruned.parameters()) + list(target32.parameters())
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)  # gradients with respect to the input only
    batch = batch or len(x0)
    views = contextlib.ExitStack()  # the float32 views cast their layers once for the whole search
    for view in {id(m): m for m in (target32, pruned) if m is not c.pruned}.values():
        views.enter_context(fixed_masks(view))
    found = [x0]  # the starts and, per start, the point of its path with the largest float32 error
    try:
        for i in range(0, len(x0), batch):
            x = x0[i:i + batch].float()
            best, best_x = torch.full((len(x),), -1.0), x.clone()
            lo_i, hi_i = (lo32[i:i + batch], hi32[i:i + batch]) if boxes else (lo, hi)
            step = 0.1 * (hi_i - lo_i)
            for k in range(steps + 1):
                x.requires_grad_(True)
                err = _errors(target32, pruned, x)
                with torch.no_grad():
                    better = err.detach() > best
                    best[better], best_x[better] = err.detach()[better], x.detach()[better]
                if k == steps or flat:
                    break
                (grad,) = torch.autograd.grad(err.sum(), x)
                with torch.no_grad():
                    x = (x + step * grad.sign()).clamp(lo_i, hi_i)
                if (k + 1) % max(steps // 5, 1) == 0:
                    step /= 2
            found.append(best_x.double())
    finally:
        views.close()
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
    candidates = torch.cat(found)
    if boxes:  # float32 steps may round past a box's float64 edges: the witnesses stay inside
        candidates = torch.maximum(torch.minimum(candidates, torch.cat([hi, hi])), torch.cat([lo, lo]))
    with torch.no_grad():  # every candidate measured in float64: the reported error is exact
        err = torch.cat([_errors(target64, network, candidates[i:i + batch]) for i in range(0, len(candidates), batch)])
    return candidates, err


def _token_search(c: PrunedNetwork, target64, network, seeds, restarts: int, steps: int, seed: int) -> dict[str, Any]:
    """The token-id version of :func:`adversarial_search`: a seeded hill climb over single-position changes."""
    start = time.perf_counter()
    lo, hi = int(c.domain.lo), int(c.domain.hi)
    gen = torch.Generator().manual_seed(seed)
    starts = [] if seeds is None else [seeds[: max(restarts // 2, 1)]]
    rand = max(restarts - sum(len(s) for s in starts), 0)
    starts.append(torch.randint(lo, hi + 1, (rand, *c.input_shape), generator=gen))
    x = torch.cat(starts).long()
    with torch.no_grad():
        err = _errors(target64, network, x)
        for _ in range(steps):
            flat = x.reshape(len(x), -1).clone()
            where = torch.randint(0, flat.shape[1], (len(x),), generator=gen)
            flat[torch.arange(len(x)), where] = torch.randint(lo, hi + 1, (len(x),), generator=gen)
            candidate = flat.reshape(x.shape)
            new = _errors(target64, network, candidate)
            better = new > err
            x[better], err[better] = candidate[better], new[better]
    j = int(err.argmax())
    return {"adversarial_output_error": float(err[j]), "witness": x[j:j + 1].clone(), "starts": len(x), "steps": steps,
            "seed": seed, "method": "hill climb over token ids", "seconds": time.perf_counter() - start}
