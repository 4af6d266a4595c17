"""Files written safely and fingerprinted: the one atomic-write helper and the one hashing helper.

A file written with :func:`atomic_write` is either absent, the old version, or complete: the
bytes go to a temporary name in the same directory, are flushed and fsynced, then renamed over
the target (``os.replace`` is atomic on POSIX and Windows). The chunk store and the run
directories of ``lottery solve`` both write through it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, BinaryIO, Callable


def atomic_write(path: str | Path, data: bytes | Callable[[BinaryIO], Any]) -> None:
    """Write ``data`` (bytes, or a function writing to a binary file handle) to ``path`` atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            if callable(data):
                data(fh)
            else:
                fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def config_hash(config: dict[str, Any]) -> str:
    """Hex SHA-256 of a configuration's canonical JSON (sorted keys; non-JSON values as str)."""
    return sha256_bytes(json.dumps(config, sort_keys=True, default=str).encode())
