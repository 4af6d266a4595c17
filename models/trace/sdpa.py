"""Pass: scaled_dot_product_attention written out as the matmuls and softmax it computes."""

from __future__ import annotations

import operator

import torch
import torch.fx as fx
import torch.nn.functional as F

from ..errors import UnsupportedModelError
from ..fxgraph import where


def sdpa_as_ops(gm: fx.GraphModule, state) -> None:
    """Every F.scaled_dot_product_attention becomes what it computes in eval mode:
    softmax(q k^T * scale + attn_mask) v with matmul and softmax (an additive float mask kept as a
    constant; causal or boolean masks and dropout are refused)."""
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not F.scaled_dot_product_attention:
            continue
        names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale")
        given = dict(zip(names, node.args), **node.kwargs)
        if given.get("is_causal") or given.get("dropout_p", 0.0) or given.get("enable_gqa"):
            raise UnsupportedModelError(f"scaled_dot_product_attention with is_causal, dropout or enable_gqa "
                                        f"({where(node)})")
        q, k, v, mask, scale = given["query"], given["key"], given["value"], given.get("attn_mask"), given.get("scale")
        with graph.inserting_before(node):
            scores = graph.call_function(torch.matmul, (q, graph.call_method("transpose", (k, -2, -1))))
            if scale is None:
                scale = graph.call_function(operator.pow, (graph.call_method("size", (q, -1)), -0.5))
            scores = graph.call_function(operator.mul, (scores, scale))
            if mask is not None:
                if isinstance(mask, fx.Node) and mask.meta.get("tensor_meta") is not None and \
                        mask.meta["tensor_meta"].dtype == torch.bool:
                    raise UnsupportedModelError(f"scaled_dot_product_attention with a boolean mask ({where(node)})")
                scores = graph.call_function(operator.add, (scores, mask))
            weights = graph.call_function(torch.softmax, (scores, -1))
            out = graph.call_function(torch.matmul, (weights, v))
        node.replace_all_uses_with(out)
        graph.erase_node(node)
    gm.recompile()
