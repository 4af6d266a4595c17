"""The linear relaxations of the nonlinear steps (ReLU, max pooling) that :mod:`models.crown` carries
backwards: of the target's activation (``*_target``: a linear upper bound of ``lam . op(z)`` on
[l, u]) and of the error the pair adds (``*_error``: of ``rho . (op(z + d) - op(z))`` with |d| <= delta).
Each relaxation is split in two: its coefficients, computed once per step from the bounds (l, u,
delta) of every region (a batch dimension of regions), and their application to a batch of
functionals, each with its region's coefficients (a batch of 1: one region for all).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def dot(lam: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Per functional: lam[k] . t[k] (t without the batch dimension, or with one of 1 or len(lam))."""
    return (lam * t).flatten(1).sum(1)


def _window_choice(l: torch.Tensor, u: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per pooling window of each bound (l, u: (batch, C, H, W)): the index (flattened H*W) of the element
    with the largest lower bound, whether it dominates (its lower bound >= every other element's upper
    bound), and max u."""
    lo_max, idx = F.max_pool2d(l, k, return_indices=True)
    others = u.clone().flatten(-2)
    others.scatter_(-1, idx.flatten(-2), float("-inf"))
    other_max = F.max_pool2d(others.view_as(u), k)
    return idx, lo_max >= other_max, F.max_pool2d(u, k)


def _scatter_to_window(coeff: torch.Tensor, idx: torch.Tensor, in_shape: tuple[int, ...]) -> torch.Tensor:
    """Each functional's per-window coefficients moved to the chosen element (idx: a batch of 1 or len(coeff))."""
    k = coeff.shape[0]
    out = torch.zeros((k, in_shape[0], in_shape[1] * in_shape[2]), dtype=coeff.dtype)
    out.scatter_add_(-1, idx.flatten(-2).expand(k, -1, -1), coeff.flatten(-2))
    return out.view(k, *in_shape)


def relu_target_coeffs(l, u, delta, kernel):
    """Per neuron of relu on [l, u]: the upper side's slope and intercept (the triangle's where unstable)
    and the lower side's slope (0 or 1, the closer)."""
    active, inactive = l >= 0, u <= 0
    unstable = ~(active | inactive)
    width = torch.where(unstable, u - l, torch.ones_like(u))
    up_slope = torch.where(active, 1.0, torch.where(unstable, u / width, 0.0))
    up_icpt = torch.where(unstable, -up_slope * l, 0.0)
    return up_slope, up_icpt, torch.where(active | (unstable & (u > -l)), 1.0, 0.0)


def relu_target(lam, coeffs, in_shape):
    """(lam_in, const) with lam . relu(z) <= lam_in . z + const for every z in [l, u]: the
    triangle's upper side where lam > 0, slope 0 or 1 (the closer) below where lam < 0."""
    up_slope, up_icpt, low_slope = coeffs
    pos, neg = lam.clamp(min=0), lam.clamp(max=0)
    return pos * up_slope + neg * low_slope, dot(pos, up_icpt)


def pool_target_coeffs(l, u, delta, kernel):
    """Per window: the element with the largest lower bound, whether it dominates, and max u."""
    return _window_choice(l, u, kernel)


def pool_target(lam, coeffs, in_shape):
    """(lam_in, const) with lam . maxpool(z) <= lam_in . z + const on [l, u]: maxpool >= z[idx] (idx: the
    largest lower bound) where lam < 0; = z[idx] where that element dominates, else <= max u."""
    idx, dominant, u_max = coeffs
    pos, neg = lam.clamp(min=0), lam.clamp(max=0)
    return (_scatter_to_window(torch.where(dominant, pos, 0.0) + neg, idx, in_shape),
            dot(torch.where(dominant, 0.0, pos), u_max))


def relu_error_coeffs(l, u, delta, kernel):
    """Per neuron: the slope carried (1 on, 0 off for every z + d, else 1/2) and the remainder (delta / 2 where unstable)."""
    active, inactive = l - delta >= 0, u + delta <= 0
    unstable = ~(active | inactive)
    return torch.where(active, 1.0, torch.where(unstable, 0.5, 0.0)), torch.where(unstable, delta / 2, 0.0)


def relu_error(rho, coeffs, in_shape):
    """(rho_in, const) with rho . (relu(z + d) - relu(z)) <= rho_in . d + const for z in [l, u],
    |d| <= delta: exact where the neuron is on (or off) for every such z + d, else d / 2 carried
    and |d| / 2 <= delta / 2 a remainder."""
    slope, remainder = coeffs
    return rho * slope, dot(rho.abs(), remainder)


def pool_error_coeffs(l, u, delta, kernel):
    """Per window of z + d: the element that may dominate it, whether it does, and the window's largest delta."""
    idx, dominant, _ = _window_choice(l - delta, u + delta, kernel)
    floor = F.interpolate(F.max_pool2d(l - delta, kernel), scale_factor=kernel, mode="nearest")
    floor = F.pad(floor, (0, l.shape[-1] - floor.shape[-1], 0, l.shape[-2] - floor.shape[-2]), value=math.inf)
    candidate = u + delta >= floor  # may be the window's largest of z + d (or of z)
    return idx, dominant, F.max_pool2d(torch.where(candidate, delta, 0.0), kernel)


def pool_error(rho, coeffs, in_shape):
    """(rho_in, const) with rho . (maxpool(z + d) - maxpool(z)) <= rho_in . d + const: the dominant
    element's error where one dominates for every z + d, else at most the window's largest delta."""
    idx, dominant, delta_max = coeffs
    return (_scatter_to_window(torch.where(dominant, rho, 0.0), idx, in_shape),
            dot(torch.where(dominant, 0.0, rho.abs()), delta_max))


#: per (step kind, what is bounded): the per-region coefficients from the bounds (l, u, delta, kernel),
#: computed once per step, and their application to a batch of functionals (lam, coefficients, in_shape)
RELAXATIONS = {("relu", "target"): (relu_target_coeffs, relu_target),
               ("maxpool", "target"): (pool_target_coeffs, pool_target),
               ("relu", "error"): (relu_error_coeffs, relu_error),
               ("maxpool", "error"): (pool_error_coeffs, pool_error)}
