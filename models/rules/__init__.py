"""The registry of op rules: one :class:`Rule` per parameter-free op the construction keeps as the
target's own (:mod:`.base` says what a rule owns). Every consumer asks here: the tracer's op check
and sign analysis (:mod:`models.trace.check`), interval propagation (:mod:`models.bounds`), the
linear relaxation's chain (:mod:`models.crown`) and the supported-ops list of the docs
(``python -m models.rules`` writes it; a test checks the committed copy).

Adding an op is adding a Rule to the ``RULES`` of one of the files here.
"""

from __future__ import annotations

from typing import Mapping

import torch.fx as fx
import torch.nn as nn

from . import activations, arithmetic, normalization, shape
from .activations import softmax_bounds
from .base import AS_IS, Bound, Call, Const, NoBoundRule, Rule, parts

__all__ = ["AS_IS", "Bound", "Call", "Const", "NoBoundRule", "Rule", "RULES", "activation_of", "call_for", "parts", "rule_for", "rule_named",
           "softmax_bounds", "supported_ops_markdown"]

RULES: list[Rule] = [*activations.RULES, *arithmetic.RULES, *shape.RULES, *normalization.RULES]


def _index() -> tuple[dict, dict, dict]:
    functions, methods, modules = {}, {}, {}
    for rule in RULES:
        for table, keys in ((functions, rule.functions), (methods, rule.methods), (modules, rule.modules)):
            for key in keys:
                if key in table:
                    raise RuntimeError(f"{key!r} has two rules: {table[key].name!r} and {rule.name!r}")
                table[key] = rule
    return functions, methods, modules


_FUNCTIONS, _METHODS, _MODULES = _index()


def rule_named(name: str) -> Rule:
    """The rule called ``name`` (KeyError naming the known ones otherwise)."""
    for rule in RULES:
        if rule.name == name:
            return rule
    raise KeyError(f"no op rule {name!r}; rules: {[r.name for r in RULES]}")


def rule_for(node: fx.Node, module: nn.Module | None = None) -> Rule | None:
    """The rule covering a call node (``module``: the module a ``call_module`` node calls; the most
    derived class with a rule wins, so ReLU6 is not taken for the Hardtanh it derives from)."""
    if node.op == "call_function":
        try:
            return _FUNCTIONS.get(node.target)
        except TypeError:  # an unhashable target
            return None
    if node.op == "call_method":
        return _METHODS.get(node.target)
    if node.op == "call_module" and module is not None:
        return next((_MODULES[c] for c in type(module).__mro__ if c in _MODULES), None)
    return None


def call_for(node: fx.Node, modules: Mapping[str, nn.Module],
             dependent: Mapping[fx.Node, bool] | None = None) -> Call | None:
    """The node as a :class:`Call` of its rule, or None where no rule covers it."""
    module = modules.get(node.target) if node.op == "call_module" else None
    rule = rule_for(node, module)
    return None if rule is None else Call(node, rule, module, dependent)


def activation_of(node: fx.Node, modules: Mapping[str, nn.Module]):
    """The :class:`.activations.Elementwise` bound parameters of an activation node (None for
    other nodes, or where the call's arguments have no rule)."""
    call = call_for(node, modules)
    return None if call is None or call.rule.activation is None else call.rule.activation(call)


def supported_ops_markdown() -> str:
    """The supported parameter-free ops as a markdown table, from the registry."""
    lines = ["| op | written as | accepted | certified bound |", "|---|---|---|---|"]
    for rule in RULES:
        bound = "interval rule" if rule.interval is not None else f"none: {rule.no_interval}"
        if rule.relaxation is not None:
            bound += ", linear relaxation"
        lines.append(f"| {rule.name} | {', '.join(f'`{k}`' for k in rule.keys())} | {rule.doc} | {bound} |")
    return "\n".join(lines) + "\n"
