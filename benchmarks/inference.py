"""Statistics the claims rest on, each saying which probability or which fit it is.

* :func:`clopper_pearson`: the exact (conservative) binomial confidence interval of a success
  probability from ``successes`` of ``trials``.
* :func:`deciding_m`: the smallest m whose success probability is certified to be at least
  1 - delta (its Clopper-Pearson interval lies at or above 1 - delta), and the largest m below it
  certified to fall short (interval below 1 - delta): the true first m with P >= 1 - delta lies
  in (below, m], each end at the intervals' confidence.
* :func:`least_squares`: a multivariate linear fit with R^2 and t-based 95% intervals of the
  coefficients (from the residuals; exact for Gaussian noise, approximate otherwise).
* :func:`bracket_slopes`: the range of the least-squares slope when every y is only known to lie
  in a bracket (a first crossing of discrete m): the slope is linear in y, so its extremes are at
  bracket ends (the upper end where x is above its mean for the largest slope).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

CONFIDENCE = 0.95


def clopper_pearson(successes: int, trials: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Two-sided Clopper-Pearson interval of a binomial probability (``confidence`` coverage)."""
    from scipy.stats import beta

    if not 0 <= successes <= trials or trials < 1:
        raise ValueError(f"need 0 <= successes <= trials and trials >= 1; got {successes} of {trials}")
    alpha = 1.0 - confidence
    low = 0.0 if successes == 0 else float(beta.ppf(alpha / 2, successes, trials - successes + 1))
    high = 1.0 if successes == trials else float(beta.ppf(1 - alpha / 2, successes + 1, trials - successes))
    return low, high


def deciding_m(counts: dict[int, tuple[int, int]], delta: float) -> dict[str, Any]:
    """From {m: (successes, trials)}: the smallest m with Clopper-Pearson low >= 1 - delta (None if
    none), its counts and interval, and ``below``: the largest smaller m with high < 1 - delta."""
    level = 1.0 - delta
    ms = sorted(counts)
    out: dict[str, Any] = {"m": None, "below": None}
    for m in ms:
        k, n = counts[m]
        low, high = clopper_pearson(k, n)
        if high < level:
            out["below"] = m
        if low >= level:
            out.update(m=m, successes=k, trials=n, ci_low=low, ci_high=high)
            return out
    k, n = counts[ms[-1]]  # not certified within the range: the last m's counts
    low, high = clopper_pearson(k, n)
    out.update(successes=k, trials=n, ci_low=low, ci_high=high, last_m=ms[-1])
    return out


def least_squares(columns: dict[str, np.ndarray], y: np.ndarray) -> dict[str, Any]:
    """y ~ sum_k coef_k x_k + intercept: coefficients, R^2, and 95% t intervals (None with no
    residual degrees of freedom)."""
    from scipy.stats import t as student

    names = list(columns)
    X = np.column_stack([np.asarray(columns[k], dtype=float) for k in names] + [np.ones(len(y))])
    y = np.asarray(y, dtype=float)
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ coef
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((resid ** 2).sum()) / total if total > 0 else math.nan
    dof = len(y) - X.shape[1]
    out: dict[str, Any] = {"coef": dict(zip(names, coef[:-1].tolist())), "intercept": float(coef[-1]),
                           "r2": r2, "points": len(y), "ci95": None}
    if dof > 0:
        sigma2 = float((resid ** 2).sum()) / dof
        cov = sigma2 * np.linalg.pinv(X.T @ X)
        half = student.ppf(0.975, dof) * np.sqrt(np.diag(cov))
        out["ci95"] = {name: [float(c - h), float(c + h)] for name, c, h in zip(names + ["intercept"], coef, half)}
    return out


def bracket_slopes(x: np.ndarray, low: np.ndarray, high: np.ndarray) -> tuple[float, float]:
    """(min, max) of the least-squares slope of y on x over every y with low <= y <= high."""
    x = np.asarray(x, dtype=float)
    w = (x - x.mean()) / ((x - x.mean()) ** 2).sum()  # slope = w . y, extreme at bracket ends
    low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    return float(np.where(w > 0, low, high) @ w), float(np.where(w > 0, high, low) @ w)
