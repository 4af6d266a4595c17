"""Every classification model torchvision lists, traced as the construction traces it: traced (its
layers found, every op with a rule) or refused (the op named and why), with its size.

This is the fast check of op coverage over the whole zoo (it solves nothing; `lottery bench zoo`
builds tickets for a chosen few). Each model is built with random weights (``weights=None``) and
traced by ``models.trace.trace_target``; models with more than ``--max-params`` weights (by
torchvision's weights metadata) are listed as skipped (they trace like their smaller siblings but
take minutes and gigabytes to build).
Writes ``survey.json`` and ``survey.md``. Needs torchvision.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from models.errors import UsageError

from .common import cli_main, command_line, machine_info, markdown_table, write_outputs


def _listed_params(name: str) -> int | None:
    """The parameter count torchvision's weights metadata gives for the model, without building it
    (None where it lists no weights)."""
    import torchvision.models as tvm

    try:
        return int(next(iter(tvm.get_model_weights(name))).meta["num_params"])
    except (KeyError, StopIteration, ValueError):
        return None


def survey_one(name: str, max_params: int) -> dict[str, Any]:
    """One model's row: status traced / refused / skipped, parameters, constructed layers, reason."""
    import torch
    import torchvision.models as tvm

    from models.errors import UnsupportedModelError
    from models.trace import trace_target

    start = time.perf_counter()
    listed = _listed_params(name)
    if listed is not None and listed > max_params:
        return {"model": name, "params": listed, "status": "skipped", "seconds": 0.0,
                "reason": f"{listed / 1e6:.0f}M parameters (torchvision's weights metadata) > --max-params"}
    torch.manual_seed(0)
    model = tvm.get_model(name, weights=None).eval()
    row: dict[str, Any] = {"model": name, "params": sum(p.numel() for p in model.parameters())}
    try:
        _, layers = trace_target(model, input_nonneg=False)
    except UnsupportedModelError as exc:
        return dict(row, status="refused", reason=str(exc), seconds=time.perf_counter() - start)
    return dict(row, status="traced", layers=len(layers), reason="", seconds=time.perf_counter() - start)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", default=None, help="comma-separated subset (default: every classification model "
                   "torchvision.models.list_models lists)")
    p.add_argument("--max-params", type=float, default=150e6, help="larger models are skipped (default 150e6)")
    p.add_argument("--out", type=Path, default=Path("bench_out/survey"), help="output directory")


def run(args: argparse.Namespace) -> dict[str, Any]:
    try:
        import torchvision.models as tvm
    except ImportError as exc:
        raise UsageError(f"lottery bench survey needs torchvision ({exc})") from exc
    from tqdm import tqdm

    names = args.models.split(",") if args.models else tvm.list_models(module=tvm)
    unknown = sorted(set(names) - set(tvm.list_models()))
    if unknown:
        raise UsageError(f"--models: not torchvision models: {unknown}")
    rows = [survey_one(name, int(args.max_params)) for name in tqdm(names, desc="tracing", unit="model")]
    counts = {s: sum(r["status"] == s for r in rows) for s in ("traced", "refused", "skipped")}
    payload = {"command": command_line(), "machine": machine_info(), "counts": counts, "rows": rows}
    table = markdown_table(["model", "params (M)", "status", "layers", "reason"],
                           [[r["model"], f"{r['params'] / 1e6:.1f}", r["status"], r.get("layers", ""),
                             r["reason"][:300].replace("|", "\\|")] for r in rows])
    summary = ", ".join(f"{v} {k}" for k, v in counts.items())
    write_outputs(args.out, "survey", payload, f"# torchvision classification models: {summary}\n\n{table}\n")
    print(table)
    print(summary)
    return payload


def main(argv: list[str] | None = None) -> None:
    cli_main("lottery bench survey", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    main()
