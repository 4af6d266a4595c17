"""Run directories: what ``lottery solve`` writes, and the job store inside it.

    DIR/.lottery-run   the marker: only a directory carrying it is ever replaced (--force)
    DIR/chunks/        the solver's chunk store (resumable: every solved chunk, atomically written)
    DIR/target.*       a copy of the target file (DIR/target/: of a Hugging Face folder's files)
    DIR/report.md, weight_errors.png, ticket.pt, pruned_state_dict.pt, adversarial_witness.pt[, pruned.pt2]
    DIR/report.json    written last: a directory with a report.json is a complete run

Every file is written atomically (:func:`solver.files.atomic_write`). A run's configuration
(everything that determines its result) is hashed; a run directory holding another
configuration is refused unless ``force``, and ``force`` removes only the files listed above.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import torch

from solver.files import atomic_write, config_hash, sha256_file
from solver.store import ChunkStore

from .errors import LotteryError
from .network import PrunedNetwork
from .export import export_program, plain_state_dict
from .report import plot_weight_errors, report_markdown
from .target import TargetError, hugging_face_files, target_sha256
from .ticket import ticket_dict

CHUNKS_DIR = "chunks"
#: the file that makes a directory a run directory (only those may be replaced with --force)
MARKER = ".lottery-run"
MARKER_FORMAT = "lottery-run-directory"
RUN_FILES = (MARKER, "report.json", "report.md", "weight_errors.png", "ticket.pt", "pruned_state_dict.pt", "pruned.pt2",
             "adversarial_witness.pt")
HASH_DIGITS = 16  # of the configuration hash recorded in report.json


class RunDirError(LotteryError, ValueError):
    """The output directory holds a different run (use --force) or cannot be written."""


def run_hash(config: dict[str, Any]) -> str:
    return config_hash(config)[:HASH_DIGITS]


def json_safe(x: Any) -> Any:
    """``x`` with every non-JSON value made JSON (arrays and tensors to lists, others to str)."""
    return json.loads(json.dumps(x, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def _listing(path: Path, most: int = 5) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def is_run_dir(path: Path) -> bool:
    """A directory this tool made for a run: it carries the marker file."""
    marker = path / MARKER
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text()).get("format") == MARKER_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_output_location(out_dir: Path, protected: dict[str, Path]) -> None:
    """Refuse an output directory that is the working or home directory, or holds ``protected``
    paths (e.g. {"the target": ..., "the data": ...}): a run directory may be replaced with --force."""
    out = out_dir.expanduser().resolve()
    if out == Path.cwd().resolve():
        raise RunDirError(f"refusing to write the run into the working directory {str(out)!r}; pass --out DIR")
    if out == Path.home().resolve():
        raise RunDirError(f"refusing to write the run into the home directory {str(out)!r}; pass --out DIR")
    for what, path in protected.items():
        if _inside(path.expanduser().resolve(), out):
            raise RunDirError(f"refusing to write the run into {str(out_dir)!r}: it holds {what} ({str(path)!r}); "
                              f"choose another --out")


def prepare_run_dir(out_dir: Path, config: dict[str, Any], force: bool, resume: bool = False) -> None:
    """Check the output directory before any work, and claim it (the marker file).

    Usable: a directory that does not exist yet, an empty one, or a run directory (with the
    marker) holding this configuration's finished or interrupted run, which is continued (its
    solved chunks are reused). A run directory holding another configuration is refused unless
    ``force``, which removes the files this tool writes there (nothing else). Any other
    directory is refused, naming what it holds. ``resume`` insists that there is something to resume.
    """
    store_config = out_dir / CHUNKS_DIR / "config.json"
    if out_dir.exists() and not out_dir.is_dir():
        raise RunDirError(f"output path {str(out_dir)!r} exists and is not a directory")
    empty = not out_dir.exists() or not any(out_dir.iterdir())
    if not empty and not is_run_dir(out_dir):
        raise RunDirError(f"output directory {str(out_dir)!r} is not empty and is not a lottery run directory "
                          f"(it holds {_listing(out_dir)}); choose another --out")
    if resume and not store_config.is_file():
        raise RunDirError(f"--resume: {str(out_dir)!r} holds no interrupted or finished run to resume")
    if not empty and force:
        clear_run_dir(out_dir)
    elif not empty:
        old = _recorded_hash(out_dir)
        if old != run_hash(config):
            raise RunDirError(f"output directory {str(out_dir)!r} holds a different run (config {old}); "
                              f"choose another --out or pass --force to replace it")
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / MARKER, json.dumps({"format": MARKER_FORMAT, "version": 1}).encode())


def _recorded_hash(out_dir: Path) -> str | None:
    """The configuration hash of the run in ``out_dir`` (finished: report.json; else its chunk store)."""
    for path, get in ((out_dir / "report.json", lambda r: r.get("config_hash")),
                      (out_dir / CHUNKS_DIR / "config.json", lambda r: r.get("config", {}).get("run_hash"))):
        if path.is_file():
            try:
                return get(json.loads(path.read_text()))
            except (OSError, ValueError, AttributeError):
                return None
    return None


def clear_run_dir(out_dir: Path) -> None:
    """Remove what this tool writes in a run directory (and nothing else a user put there)."""
    for entry in out_dir.iterdir():
        if entry.name == CHUNKS_DIR and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        elif entry.name in RUN_FILES or (entry.name.startswith("target.") or entry.name == "target") and entry.is_file():
            entry.unlink()
        elif entry.name == "target" and entry.is_dir() and not entry.is_symlink():  # a Hugging Face folder's copy
            shutil.rmtree(entry)
        elif entry.name.startswith(".") and ".tmp-" in entry.name and entry.is_file():
            entry.unlink()  # an interrupted atomic write


def open_store(out_dir: Path, config: dict[str, Any]) -> ChunkStore:
    """The run directory's chunk store (``DIR/chunks``), made for this configuration."""
    return ChunkStore(out_dir / CHUNKS_DIR, {"run_hash": run_hash(config)})


def has_solved_chunks(out_dir: Path) -> bool:
    return any((out_dir / CHUNKS_DIR).glob("*.sha256"))


def save_run(out_dir: Path, c: PrunedNetwork, report: dict[str, Any], target_file: Path, config: dict[str, Any],
             check_inputs: torch.Tensor, export: bool = False, witness: torch.Tensor | None = None) -> dict[str, Any]:
    """Write the run's files into ``out_dir``, each atomically, report.json last (a directory with a
    report.json is complete). The chunk store in ``out_dir/chunks`` is kept, so a rerun reuses every
    solved chunk. Returns the report as written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").unlink(missing_ok=True)  # the directory is incomplete until the end
    target_copy = _copy_target(target_file, out_dir)
    desc = dict(report["target"], file=target_copy)
    report = json_safe(dict(report, target=desc, config=config, config_hash=run_hash(config)))
    atomic_write(out_dir / "weight_errors.png", lambda fh: plot_weight_errors(c, fh))
    atomic_write(out_dir / "ticket.pt", lambda fh: torch.save(ticket_dict(c, desc, check_inputs), fh))
    report["ticket_sha256"] = sha256_file(out_dir / "ticket.pt")  # verify detects a changed or damaged ticket
    atomic_write(out_dir / "pruned_state_dict.pt", lambda fh: torch.save(plain_state_dict(c.pruned), fh))
    atomic_write(out_dir / "report.md", report_markdown(report).encode())
    if witness is not None:  # the input where the adversarial search found its error
        atomic_write(out_dir / "adversarial_witness.pt", lambda fh: torch.save({"input": witness.clone()}, fh))
    if export:  # torch.export takes seconds (dynamo); opt-in
        atomic_write(out_dir / "pruned.pt2", lambda fh: export_program(c.pruned, check_inputs, fh))
    atomic_write(out_dir / "report.json", (json.dumps(report, indent=2) + "\n").encode())
    return report


def _copy_target(target: Path, out_dir: Path) -> str:
    """Copy the target into the run directory (a file as ``target.EXT``; a Hugging Face folder's files
    into ``target/``, each atomically); returns the copy's name."""
    def copy(src_path: Path, dst_path: Path) -> None:
        with open(src_path, "rb") as src:
            atomic_write(dst_path, lambda fh: shutil.copyfileobj(src, fh))

    if not target.is_dir():
        name = "target" + "".join(target.suffixes[-1:])
        copy(target, out_dir / name)
        return name
    folder = out_dir / "target"
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise RunDirError(f"{str(folder)!r} exists and is not the run's target folder")
    folder.mkdir(exist_ok=True)
    for path in hugging_face_files(target):
        copy(path, folder / path.name)
    return "target"


def read_report(path: Path) -> dict[str, Any]:
    """The fields of an untrusted report.json that verification uses, checked."""
    try:
        report = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RunDirError(f"{str(path)!r} is not a readable report ({type(exc).__name__}: {exc})") from exc
    ok = (isinstance(report, dict) and isinstance(report.get("max_output_error"), (int, float))
          and not isinstance(report.get("max_output_error"), bool) and report["max_output_error"] >= 0
          and (report.get("data") is None or isinstance(report.get("data"), str)))
    normalize = report.get("config", {}).get("normalize") if ok and isinstance(report.get("config"), dict) else None
    ok = ok and (normalize is None or (isinstance(normalize, list) and len(normalize) == 2
                                       and all(isinstance(v, (int, float)) for v in normalize)))
    local = report.get("local_certificates") if ok else None
    radius = local.get("radius") if isinstance(local, dict) else None
    ok = ok and (local is None or isinstance(local, dict)) and (
        radius is None or isinstance(radius, (int, float)) and not isinstance(radius, bool) and math.isfinite(radius))
    if not ok:
        raise RunDirError(f"{str(path)!r} is malformed or tampered with: it needs max_output_error (a number >= 0), "
                          f"data (a string or null), config.normalize (null or [MEAN, STD]) and "
                          f"local_certificates.radius (absent or a finite number)")
    return report


def check_ticket_file(run_dir: Path, report: dict[str, Any]) -> None:
    """ticket.pt must have the SHA-256 report.json records (runs made before it was recorded: unchecked)."""
    recorded = report.get("ticket_sha256")
    if recorded is None:
        return
    digest = sha256_file(run_dir / "ticket.pt")
    if digest != recorded:
        raise RunDirError(f"{str(run_dir / 'ticket.pt')!r} was changed or damaged: its SHA-256 is {digest[:16]}..., "
                          f"report.json records {str(recorded)[:16]}...")


def target_copy(run_dir: Path, name: str, sha256: str) -> Path:
    """The run's copy of its target, checked against the SHA-256 the ticket records."""
    path = run_dir / name
    if path.is_symlink() or not (path.is_file() or path.is_dir()):
        raise RunDirError(f"the run's target copy {str(path)!r} is missing")
    try:
        digest = target_sha256(path)
    except TargetError as exc:  # a folder that is not (any more) a complete save_pretrained folder
        raise RunDirError(f"the run's target copy {str(path)!r} is damaged: {exc}") from exc
    if digest != sha256:
        raise RunDirError(f"the target copy {str(path)!r} was changed: its SHA-256 is {digest[:16]}..., the "
                          f"ticket records {sha256[:16]}...")
    return path
