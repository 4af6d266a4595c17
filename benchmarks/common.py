"""Shared helpers for benchmark scripts: machine description, instances, output files."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np


def machine_info() -> dict[str, Any]:
    """Where a figure was measured: CPU, cores usable, memory, GPU, package versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        cores = os.cpu_count()
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": cores,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        info["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        pass
    for pkg in ("numpy", "torch", "numba", "ortools", "gurobipy"):
        try:
            info[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            info[pkg] = None
    try:
        import torch

        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # pragma: no cover - torch broken
        info["gpu"] = None
    return info


def product_coefficients(rng: np.random.Generator, count: int, m: int) -> np.ndarray:
    """Coefficients as in the construction: c = u * v with u, v ~ U[-1, 1] independent."""
    return rng.uniform(-1, 1, (count, m)) * rng.uniform(-1, 1, (count, m))


def weight_like_targets(rng: np.random.Generator, count: int, std: float = 0.25) -> np.ndarray:
    """Targets drawn like a trained layer's weights once the construction's per-layer scale has
    mapped the layer's largest |w| to about 1: N(0, std^2), clipped to [-1, 1]."""
    return np.clip(rng.normal(0.0, std, count), -1.0, 1.0)


def cli_main(prog: str, doc: str, add_arguments, run, argv: list[str] | None = None) -> None:
    """Entry point of a benchmark script run as ``python -m benchmarks.NAME`` (same options as
    ``lottery PROG``)."""
    import argparse

    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    add_arguments(parser)
    run(parser.parse_args(argv))


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]])


def write_outputs(out_dir: Path, stem: str, payload: dict, markdown: str) -> dict[str, Path]:
    """Write ``stem.json`` and ``stem.md`` into out_dir; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / f"{stem}.json", "md": out_dir / f"{stem}.md"}
    payload = dict(payload, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    paths["json"].write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
    paths["md"].write_text(markdown)
    return paths


def _json_default(x: Any) -> Any:
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"cannot serialise {type(x).__name__}")


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(x) for x in row) + " |")
    return "\n".join(lines) + "\n"


def format_seconds(s: float) -> str:
    """Human units for a duration: ns, us, ms or s with 3 significant digits."""
    if not np.isfinite(s):
        return "n/a"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def new_figure(*args: Any, **kwargs: Any):
    """``plt.subplots`` on the non-interactive Agg backend; returns (plt, fig, axes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(*args, **kwargs)
    return plt, fig, axes


def plotted_series(fig) -> dict[str, dict[str, list[float]]]:
    """The data of every labelled line of a figure, keyed "axes index: label": what the PNG shows,
    so a test (and a reader of the JSON) can compare a plot with its table. An errorbar series
    (labelled on its container) adds "yerr": the half-length of each vertical bar."""
    from matplotlib.container import ErrorbarContainer

    out = {}
    for i, ax in enumerate(fig.axes):
        for line in ax.get_lines():
            label = line.get_label()
            if label and not label.startswith("_"):
                x, y = line.get_data()
                out[f"{i}: {label}"] = {"x": [float(v) for v in x], "y": [float(v) for v in y]}
        for box in ax.containers:
            label = box.get_label()
            if isinstance(box, ErrorbarContainer) and label and not label.startswith("_"):
                data, _, bars = box.lines
                x, y = data.get_data()
                series = {"x": [float(v) for v in x], "y": [float(v) for v in y]}
                if bars:  # segments (x, y - e) -> (x, y + e)
                    series["yerr"] = [float(abs(seg[1][1] - seg[0][1]) / 2) for seg in bars[0].get_segments()]
                out[f"{i}: {label}"] = series
    return out


def save_figure(plt, fig, path: Path, dpi: int = 110, grid: bool = True) -> dict[str, dict[str, list[float]]]:
    """Grid on every axis, tight layout, write the PNG, free the figure; returns :func:`plotted_series`."""
    if grid:
        for ax in fig.axes:
            ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    series = plotted_series(fig)
    plt.close(fig)
    return series
