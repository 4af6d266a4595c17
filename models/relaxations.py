"""The linear relaxations of the nonlinear steps (ReLU, max pooling) that :mod:`models.crown` carries
backwards: of the target's activation (``*_target``: a linear upper bound of ``lam . op(z)`` on
[l, u]) and of the error the pair adds (``*_error``: of ``rho . (op(z + d) - op(z))`` with |d| <= delta).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dot(lam: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Per functional: lam[k] . t (t without the batch dimension)."""
    return (lam * t.unsqueeze(0)).flatten(1).sum(1)


def _window_choice(l: torch.Tensor, u: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per pooling window: the index (flattened H*W) of the element with the largest lower bound,
    whether it dominates (its lower bound >= every other element's upper bound), and max u."""
    lo_max, idx = F.max_pool2d(l.unsqueeze(0), k, return_indices=True)
    others = u.clone().flatten(-2)
    others.scatter_(-1, idx[0].flatten(-2), float("-inf"))
    other_max = F.max_pool2d(others.view_as(u).unsqueeze(0), k)[0]
    return idx[0], lo_max[0] >= other_max, F.max_pool2d(u.unsqueeze(0), k)[0]


def _scatter_to_window(coeff: torch.Tensor, idx: torch.Tensor, in_shape: tuple[int, ...]) -> torch.Tensor:
    out = torch.zeros((coeff.shape[0], in_shape[0], in_shape[1] * in_shape[2]), dtype=coeff.dtype)
    out.scatter_add_(-1, idx.flatten(-2).unsqueeze(0).expand(coeff.shape[0], -1, -1), coeff.flatten(-2))
    return out.view(coeff.shape[0], *in_shape)


def relu_target(lam: torch.Tensor, l: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(lam_in, const) with lam . relu(z) <= lam_in . z + const for every z in [l, u]: the
    triangle's upper side where lam > 0, slope 0 or 1 (the closer) below where lam < 0."""
    active, inactive = l >= 0, u <= 0
    unstable = ~(active | inactive)
    width = torch.where(unstable, u - l, torch.ones_like(u))
    up_slope = torch.where(active, 1.0, torch.where(unstable, u / width, 0.0))
    up_icpt = torch.where(unstable, -up_slope * l, 0.0)
    low_slope = torch.where(active | (unstable & (u > -l)), 1.0, 0.0)
    pos, neg = lam.clamp(min=0), lam.clamp(max=0)
    return pos * up_slope + neg * low_slope, dot(pos, up_icpt)


def pool_target(lam: torch.Tensor, l: torch.Tensor, u: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(lam_in, const) with lam . maxpool(z) <= lam_in . z + const on [l, u]: maxpool >= z[idx] (idx: the
    largest lower bound) where lam < 0; = z[idx] where that element dominates, else <= max u."""
    idx, dominant, u_max = _window_choice(l, u, k)
    pos, neg = lam.clamp(min=0), lam.clamp(max=0)
    return (_scatter_to_window(torch.where(dominant, pos, 0.0) + neg, idx, tuple(l.shape)),
            dot(torch.where(dominant, 0.0, pos), u_max))


def relu_error(rho: torch.Tensor, l: torch.Tensor, u: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rho_in, const) with rho . (relu(z + d) - relu(z)) <= rho_in . d + const for z in [l, u],
    |d| <= delta: exact where the neuron is on (or off) for every such z + d, else d / 2 carried
    and |d| / 2 <= delta / 2 a remainder."""
    active, inactive = l - delta >= 0, u + delta <= 0
    unstable = ~(active | inactive)
    return (rho * torch.where(active, 1.0, torch.where(unstable, 0.5, 0.0)),
            dot(rho.abs(), torch.where(unstable, delta / 2, 0.0)))


def pool_error(rho: torch.Tensor, l: torch.Tensor, u: torch.Tensor, delta: torch.Tensor,
               k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rho_in, const) with rho . (maxpool(z + d) - maxpool(z)) <= rho_in . d + const: the dominant
    element's error where one dominates for every z + d, else at most the window's largest delta."""
    idx, dominant, _ = _window_choice(l - delta, u + delta, k)
    return (_scatter_to_window(torch.where(dominant, rho, 0.0), idx, tuple(l.shape)),
            dot(torch.where(dominant, 0.0, rho.abs()), F.max_pool2d(delta.unsqueeze(0), k)[0]))
