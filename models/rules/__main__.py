"""``python -m models.rules``: print the supported-ops table; ``--write FILE`` replaces the table at
the end of FILE (docs/supported-ops.md) with it, keeping the text before."""

import sys
from pathlib import Path

from . import supported_ops_markdown

table = supported_ops_markdown()
if len(sys.argv) == 3 and sys.argv[1] == "--write":
    path = Path(sys.argv[2])
    text = path.read_text()
    path.write_text(text[:text.index("| op |")] + table)
elif len(sys.argv) == 1:
    print(table, end="")
else:
    sys.exit(f"usage: python -m models.rules [--write FILE]; got {sys.argv[1:]}")
