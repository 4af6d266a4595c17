"""Two run directories of ``lottery solve`` compared as a refactoring must leave them: the same
report (timings, dates, machine, paths and the time-budgeted checks aside) and the same ticket (masks, layer specs, check
outputs) bit for bit. A developer's check, run on two checkouts of the same job::

    python -m tests.compare_runs RUN_BEFORE RUN_AFTER

Prints every difference and exits 1 if there is one, 0 otherwise.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import torch

#: report keys whose values differ between two runs of the same job: timings, dates, machine, paths,
#: and what runs for as long as its time allows - the materialised check (as many inputs as fit) and
#: the adversarial search (as many steps as fit, so the error it finds)
VOLATILE = re.compile(r"(second|time|elapsed|created|machine|peak_rss|rss|duration|_s$|path|out_dir|run_dir|"
                      r"command|per_second|throughput|materialised_check|check against the real network|"
                      r"adversarial)", re.IGNORECASE)


def differences(a: Any, b: Any, where: str = "") -> list[str]:
    """Where a and b differ (dicts by key, lists by index, tensors bit for bit), volatile keys aside."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            if isinstance(key, str) and VOLATILE.search(key):
                continue
            if key not in a or key not in b:
                out.append(f"{where}/{key}: only in {'the second' if key in b else 'the first'}")
            else:
                out += differences(a[key], b[key], f"{where}/{key}")
        return out
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{where}: {len(a)} entries against {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{i}]")]
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        same = a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
        return [] if same else [f"{where}: tensors differ ({a.dtype} {tuple(a.shape)} / {b.dtype} {tuple(b.shape)})"]
    if type(a) is not type(b) or a != b:
        if isinstance(a, float) and isinstance(b, float) and a != a and b != b:  # both NaN
            return []
        return [f"{where}: {a!r} against {b!r}"]
    return []


def compare(first: Path, second: Path) -> list[str]:
    """Every difference between two run directories' report.json and ticket.pt."""
    out = []
    reports = [json.loads((d / "report.json").read_text()) for d in (first, second)]
    out += [f"report.json{d}" for d in differences(*reports)]
    tickets = [torch.load(d / "ticket.pt", weights_only=True) for d in (first, second)]
    out += [f"ticket.pt{d}" for d in differences(*tickets)]
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m tests.compare_runs RUN_BEFORE RUN_AFTER", file=sys.stderr)
        return 2
    found = compare(Path(args[0]), Path(args[1]))
    for line in found:
        print(line)
    print(f"{len(found)} differences")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
