"""A durable store of solved chunks: the run directory doubles as a job store.

Each chunk's solution is one ``.npz`` file written atomically (:func:`solver.files.atomic_write`),
with the SHA-256 of its bytes in the file name's companion ``.sha256``
written the same way *after* it. A chunk counts as done only when both exist and the checksum
matches; a truncated or corrupted file is detected, deleted and recomputed. The store records
the configuration it was made for and refuses to be reused with another one.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from .errors import SolverError
from .files import atomic_write, config_hash, sha256_bytes
from .result import FIELDS, ChunkSolution, Status


class StoreConfigError(SolverError, ValueError):
    """The store was made for a different configuration."""


def _well_formed(sol: ChunkSolution) -> bool:
    """Dtypes, shapes and status codes a solved chunk must have (the file is untrusted)."""
    b = sol.masks.shape[0] if sol.masks.ndim == 2 else -1
    return (sol.masks.dtype == bool and b >= 0 and sol.fallback.dtype == bool
            and all(getattr(sol, f).shape == (b,) for f in FIELDS if f != "masks")
            and all(getattr(sol, f).dtype == np.float64 for f in ("error_bound", "size_bound", "tolerance"))
            and np.issubdtype(sol.status.dtype, np.integer) and bool(np.isin(sol.status, list(Status)).all()))


class ChunkStore:
    """Solved chunks of one batch of problems, keyed by a name (e.g. ``layer3-000012``)."""

    def __init__(self, root: str | Path, config: dict[str, Any]):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_hash = config_hash(config)
        record = self.root / "config.json"
        if record.is_file():
            old = json.loads(record.read_text())
            if old.get("hash") != self.config_hash:
                raise StoreConfigError(
                    f"the chunk store {str(self.root)!r} was made for another configuration "
                    f"(hash {old.get('hash', '?')[:12]}, this run {self.config_hash[:12]}); "
                    f"use another output directory or --force to start over"
                )
        else:
            atomic_write(record, json.dumps({"hash": self.config_hash, "config": config}, default=str, indent=1).encode())
        self.recomputed: list[str] = []  # chunks found corrupted and solved again

    def _paths(self, key: str) -> tuple[Path, Path]:
        return self.root / f"{key}.npz", self.root / f"{key}.sha256"

    def load(self, key: str) -> ChunkSolution | None:
        """The stored solution, or None if absent or corrupted (a corrupted one is deleted)."""
        data_path, sum_path = self._paths(key)
        if not data_path.is_file() or not sum_path.is_file():
            return None
        raw = data_path.read_bytes()
        sol = None
        if sha256_bytes(raw) == sum_path.read_text().strip():
            try:
                with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
                    sol = ChunkSolution(**{f: npz[f] for f in FIELDS})
            except (KeyError, ValueError, OSError):  # a file with the right checksum but not a chunk
                sol = None
        if sol is None or not _well_formed(sol):  # corrupted: solved again
            self.recomputed.append(key)
            data_path.unlink(missing_ok=True)
            sum_path.unlink(missing_ok=True)
            return None
        return sol

    def save(self, key: str, sol: ChunkSolution) -> None:
        buf = io.BytesIO()
        np.savez(buf, **{f: getattr(sol, f) for f in FIELDS})
        raw = buf.getvalue()
        data_path, sum_path = self._paths(key)
        atomic_write(data_path, raw)
        atomic_write(sum_path, sha256_bytes(raw).encode())

    def done(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*.sha256"))
