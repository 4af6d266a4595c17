"""``python -m models.rules``: print the supported-ops table (docs/supported-ops.md holds it)."""

from . import supported_ops_markdown

print(supported_ops_markdown(), end="")
