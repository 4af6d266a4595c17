"""Run directories: what ``lottery solve`` writes, and the job store inside it.

    DIR/chunks/        the solver's chunk store (resumable: every solved chunk, atomically written)
    DIR/target.*       a copy of the target file
    DIR/report.md, weight_errors.png, ticket.pt, pruned_state_dict.pt[, pruned.pt2]
    DIR/report.json    written last: a directory with a report.json is a complete run

Every file is written atomically (:func:`solver.files.atomic_write`). A run's configuration
(everything that determines its result) is hashed; a directory holding another configuration
is refused unless ``force``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from solver.files import atomic_write, config_hash
from solver.store import ChunkStore

from .construct import Construction
from .export import export_program, plain_state_dict
from .report import plot_weight_errors, report_markdown
from .ticket import ticket_dict

CHUNKS_DIR = "chunks"
HASH_DIGITS = 16  # of the configuration hash recorded in report.json


class RunDirError(ValueError):
    """The output directory holds a different run (use --force) or cannot be written."""


def run_hash(config: dict[str, Any]) -> str:
    return config_hash(config)[:HASH_DIGITS]


def json_safe(x: Any) -> Any:
    """``x`` with every non-JSON value made JSON (arrays and tensors to lists, others to str)."""
    return json.loads(json.dumps(x, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def prepare_run_dir(out_dir: Path, config: dict[str, Any], force: bool, resume: bool = False) -> None:
    """Check the output directory before any work.

    A finished run with the same configuration, or an interrupted one (its chunk store) with the
    same configuration, is continued: solved chunks are reused. A different run is refused
    unless ``force``, which deletes it. ``resume`` insists that there is something to resume.
    """
    store_config = out_dir / CHUNKS_DIR / "config.json"
    if resume and not store_config.is_file():
        raise RunDirError(f"--resume: {str(out_dir)!r} holds no interrupted or finished run to resume")
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise RunDirError(f"output path {str(out_dir)!r} exists and is not a directory")
    if force:
        shutil.rmtree(out_dir)
        return
    if not any(out_dir.iterdir()):
        return
    wanted = run_hash(config)
    report = out_dir / "report.json"
    old = None
    if report.is_file():
        try:
            old = json.loads(report.read_text()).get("config_hash")
        except (OSError, json.JSONDecodeError):
            old = None
    elif store_config.is_file():
        try:
            old = json.loads(store_config.read_text()).get("config", {}).get("run_hash")
        except (OSError, json.JSONDecodeError):
            old = None
    else:
        raise RunDirError(f"output directory {str(out_dir)!r} is not empty and holds no lottery run; "
                          f"choose another --out or pass --force")
    if old != wanted:
        raise RunDirError(f"output directory {str(out_dir)!r} holds a different run (config {old}); "
                          f"choose another --out or pass --force to replace it")


def open_store(out_dir: Path, config: dict[str, Any]) -> ChunkStore:
    """The run directory's chunk store (``DIR/chunks``), made for this configuration."""
    return ChunkStore(out_dir / CHUNKS_DIR, {"run_hash": run_hash(config)})


def has_solved_chunks(out_dir: Path) -> bool:
    return any((out_dir / CHUNKS_DIR).glob("*.sha256"))


def save_run(out_dir: Path, c: Construction, report: dict[str, Any], target_file: Path, config: dict[str, Any],
             check_inputs: torch.Tensor, export: bool = False) -> dict[str, Any]:
    """Write the run's files into ``out_dir``, each atomically, report.json last (a directory with a
    report.json is complete). The chunk store in ``out_dir/chunks`` is kept, so a rerun reuses every
    solved chunk. Returns the report as written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").unlink(missing_ok=True)  # the directory is incomplete until the end
    target_copy = "target" + "".join(target_file.suffixes[-1:])
    with open(target_file, "rb") as src:
        atomic_write(out_dir / target_copy, lambda fh: shutil.copyfileobj(src, fh))
    desc = dict(report["target"], file=target_copy)
    report = json_safe(dict(report, target=desc, config=config, config_hash=run_hash(config)))
    atomic_write(out_dir / "report.md", report_markdown(report).encode())
    atomic_write(out_dir / "weight_errors.png", lambda fh: plot_weight_errors(c, fh))
    atomic_write(out_dir / "ticket.pt", lambda fh: torch.save(ticket_dict(c, desc, check_inputs), fh))
    atomic_write(out_dir / "pruned_state_dict.pt", lambda fh: torch.save(plain_state_dict(c.pruned), fh))
    if export:  # torch.export takes seconds (dynamo); opt-in
        atomic_write(out_dir / "pruned.pt2", lambda fh: export_program(c.pruned, check_inputs, fh))
    atomic_write(out_dir / "report.json", (json.dumps(report, indent=2) + "\n").encode())
    return report
