"""Run one `lottery` command in this process and report its peak memory (for benchmarks).

    python -m benchmarks.measure solve TARGET --arch mlp ...

prints, as its last line on stderr, ``PEAK_RSS_KB main=<kB> workers=<kB>``: the peak resident
memory of this process and the largest of its worker processes (ru_maxrss).
"""

from __future__ import annotations

import resource
import sys

from models.cli import main


def run() -> int:
    code = main(sys.argv[1:])
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(f"PEAK_RSS_KB main={own} workers={kids}", file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(run())
