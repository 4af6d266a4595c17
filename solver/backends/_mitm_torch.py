"""Meet-in-the-middle vectorised over a batch with torch (CPU or CUDA).

All problems of one call have the same number of coefficients n. The 2^h sums of each half are
one matrix product with the 0/1 table of all subsets; the right sums are sorted per row (by
number of ones first when sizes matter, so each size group is a contiguous sorted slice of the
same offsets in every row), and ``torch.searchsorted`` finds, for every left sum, the nearest
right sum to ``t - left`` in each group. Everything is float64 so the result matches the numba
kernel up to rounding.
"""

from __future__ import annotations

import math

import torch

MIN_ERROR = "min-error"
MIN_SIZE = "min-size"


def _subset_table(h: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(2^h, h) float64 0/1 table of all subsets of h items and the (2^h,) subset sizes."""
    codes = torch.arange(1 << h, device=device)
    bits = (codes[:, None] >> torch.arange(h, device=device)[None, :]) & 1
    return bits.to(torch.float64), bits.sum(dim=1)


def bytes_per_problem(n: int) -> int:
    """Peak bytes of GPU/CPU memory one problem needs in :func:`mitm_torch` (measured layout)."""
    h_left = n // 2
    h_right = n - h_left
    # right sums, sorted sums, sort indices (int64) ; left sums, queries, positions, errors per
    # group (float64 / int64), a few temporaries of the same size
    return 8 * (4 * (1 << h_right) + 8 * (1 << h_left))


def _sorted_groups(right: torch.Tensor, size_r: torch.Tensor, h_right: int,
                   grouped: bool) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    """The right half's sums sorted per row, as (size, sorted sums, subset codes): one group of all
    subsets, or (``grouped``: min-size or a size cap) one group per subset size. The subsets are
    grouped by size by a fixed permutation of their codes, the same for every row, so group k is a
    slice of it sorted per row."""
    if not grouped:
        v, idx = torch.sort(right, dim=1)
        return [(0, v, idx)]
    by_size = torch.sort(size_r, stable=True).indices
    vals = right[:, by_size]
    groups = []
    lo = 0
    for k in range(h_right + 1):
        hi = lo + math.comb(h_right, k)
        v, idx = torch.sort(vals[:, lo:hi], dim=1)
        groups.append((k, v, by_size[lo:hi][idx]))
        lo = hi
    return groups


@torch.no_grad()
def mitm_torch(
    targets: torch.Tensor,
    coeffs: torch.Tensor,
    objective: str,
    eps: float | None,
    max_size: int | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Solve b problems of n coefficients each, exactly.

    Returns (masks (b, n) bool, infeasible (b,) bool, objective (b,) float64) on the input's
    device. ``infeasible`` marks min-size problems with no subset within eps (their mask is
    then the min-error subset).
    """
    device = coeffs.device
    b, n = coeffs.shape
    h_left = n // 2
    h_right = n - h_left
    bits_l, size_l = _subset_table(h_left, device)
    bits_r, size_r = _subset_table(h_right, device)
    left = coeffs[:, :h_left] @ bits_l.T  # (b, 2^hL)
    right = coeffs[:, h_left:] @ bits_r.T  # (b, 2^hR)
    grouped = objective == MIN_SIZE or max_size is not None

    groups = _sorted_groups(right, size_r, h_right, grouped)

    query = targets[:, None] - left  # (b, 2^hL): right sum sought for each left subset
    inf = torch.tensor(math.inf, dtype=torch.float64, device=device)
    best_err = torch.full_like(query, math.inf)
    best_code = torch.zeros_like(query, dtype=torch.long)
    fit_size = torch.full_like(query, n + 1, dtype=torch.long)
    fit_err = torch.full_like(query, math.inf)
    fit_code = torch.zeros_like(query, dtype=torch.long)
    for k, vals_k, codes_k in groups:
        width = vals_k.shape[1]
        pos = torch.searchsorted(vals_k, query.contiguous())
        above = pos.clamp(max=width - 1)
        below = (pos - 1).clamp(min=0)
        err_above = (vals_k.gather(1, above) - query).abs()
        err_below = (vals_k.gather(1, below) - query).abs()
        use_below = err_below < err_above
        err = torch.where(use_below, err_below, err_above)
        code = torch.where(use_below, codes_k.gather(1, below), codes_k.gather(1, above))
        size = size_l[None, :] + k
        if max_size is not None:
            err = torch.where(size <= max_size, err, inf)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_code = torch.where(better, code, best_code)
        if objective == MIN_SIZE:
            fits = err <= eps
            improve = fits & ((size < fit_size) | ((size == fit_size) & (err < fit_err)))
            fit_size = torch.where(improve, size, fit_size)
            fit_err = torch.where(improve, err, fit_err)
            fit_code = torch.where(improve, code, fit_code)

    rows = torch.arange(b, device=device)
    infeasible = torch.zeros(b, dtype=torch.bool, device=device)
    if objective == MIN_SIZE:
        smallest = fit_size.min(dim=1).values  # n + 1 where nothing fits
        infeasible = smallest > n
        err_at_smallest = torch.where(fit_size == smallest[:, None], fit_err, inf)
        i_fit = err_at_smallest.argmin(dim=1)
        i_best = best_err.argmin(dim=1)
        i = torch.where(infeasible, i_best, i_fit)
        code_r = torch.where(infeasible, best_code[rows, i], fit_code[rows, i])
        obj = torch.where(infeasible, best_err[rows, i], smallest.to(torch.float64))
    else:
        i = best_err.argmin(dim=1)
        code_r = best_code[rows, i]
        obj = best_err[rows, i]
    masks = torch.cat([bits_l[i].bool(), bits_r[code_r].bool()], dim=1)
    return masks, infeasible, obj
