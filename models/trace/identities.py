"""Pass: calls that are the identity in eval mode are removed (stochastic depth)."""

from __future__ import annotations

import torch.fx as fx

#: functions that are the identity in eval mode, found by qualified name (torchvision is not a
#: dependency): (module, name, position of the ``training`` argument)
EVAL_IDENTITIES = {("torchvision.ops.stochastic_depth", "stochastic_depth"): 3}


def drop_eval_identities(gm: fx.GraphModule, state) -> None:
    """Remove calls that are the identity in eval mode (:data:`EVAL_IDENTITIES`, called with training=False)."""
    for node in list(gm.graph.nodes):
        key = (getattr(node.target, "__module__", None), getattr(node.target, "__name__", None))
        if node.op == "call_function" and key in EVAL_IDENTITIES:
            i = EVAL_IDENTITIES[key]
            training = node.args[i] if len(node.args) > i else node.kwargs.get("training", True)
            if training is False:
                node.replace_all_uses_with(node.args[0])
                gm.graph.erase_node(node)
    gm.recompile()

