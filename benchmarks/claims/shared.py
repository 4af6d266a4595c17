"""What the claims share: coefficient distributions, plotting and the Markdown page."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..common import command_line, machine_info, save_figure

#: the construction's default product scale (--scale-policy max, margin 1.5): |c| = 1.5 u b
PRODUCT_MARGIN = 1.5
DISTRIBUTIONS = ("uniform", "product", "exp1")


def draw(rng: np.random.Generator, dist: str, count: int, m: int,
         exp1_range: tuple[float, float] | None = None) -> np.ndarray:
    """(count, m) coefficients in the units where targets lie in [-1, 1]:

    * ``uniform``: U[-1, 1];
    * ``product``: the construction's default (balanced layout, scale margin 1.5): 1.5 u b with u, b
      ~ U[0, 1], positive for even index and negative for odd (every prefix is balanced);
    * ``exp1``: the paper's Experiment 1, uniform over the target's weight range, scaled by the
      largest |weight| (``exp1_range``: (min, max) / max |w|).
    """
    if dist == "uniform":
        return rng.uniform(-1, 1, (count, m))
    if dist == "product":
        signs = np.where(np.arange(m) % 2 == 0, 1.0, -1.0)
        return PRODUCT_MARGIN * rng.uniform(0, 1, (count, m)) * rng.uniform(0, 1, (count, m)) * signs
    if dist == "exp1":
        if exp1_range is None:
            raise ValueError("the exp1 distribution needs the target's weight range")
        return rng.uniform(exp1_range[0], exp1_range[1], (count, m))
    raise ValueError(f"unknown distribution {dist!r}; expected one of {DISTRIBUTIONS}")


def exp1_weight_range() -> tuple[float, float]:
    """(min, max) / max |w| of the first layer of the Experiment 1 network (784-500-10, trained on digits28)."""
    from ..exp1 import exp1_network

    w = next(exp1_network().parameters()).detach().double()
    scale = float(w.abs().max())
    return float(w.min()) / scale, float(w.max()) / scale


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_plot(plt, fig, axes, path: Path) -> dict:
    """Grid, tight layout, write the PNG, free the figure; returns the plotted series."""
    return save_figure(plt, fig, path)


def claim_doc(title: str, args: argparse.Namespace, verdict: str, method: str, table: str, png: str) -> str:
    info = machine_info()
    return (f"# {title}\n\nCommand: `{command_line()}`  \nMachine: {info['cpu']}, {info['cores']} cores; seed {args.seed}"
            f"{'; quick mode' if args.quick else ''}\n\n**Verdict (measured):** {verdict}\n\n{method}\n\n{table}\n![{title}]({png})\n")
