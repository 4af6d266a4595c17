"""The op-rule registry: one rule per key, the docs' supported-ops list generated from it."""

from __future__ import annotations

from pathlib import Path

import torch.fx as fx
import torch.nn as nn

from models.rules import RULES, rule_for, supported_ops_markdown

DOC = Path(__file__).resolve().parents[1] / "docs" / "supported-ops.md"


def test_docs_list_every_rule():
    """docs/supported-ops.md ends with the registry's table (regenerate: python -m models.rules --write docs/supported-ops.md)."""
    text = DOC.read_text()
    assert text.endswith(supported_ops_markdown()), "docs/supported-ops.md is stale: run python -m models.rules --write docs/supported-ops.md"
    for rule in RULES:
        assert f"| {rule.name} |" in text


def test_module_rule_is_the_most_derived():
    """ReLU6 derives from Hardtanh: its own rule is found, not Hardtanh's."""
    gm = fx.symbolic_trace(nn.Sequential(nn.ReLU6(), nn.Hardtanh()))
    modules = dict(gm.named_modules())
    names = [rule_for(n, modules.get(n.target)).name for n in gm.graph.nodes if n.op == "call_module"]
    assert names == ["relu6", "hardtanh"]
