"""Pass: Conv1d as the Conv2d with a (1, k) kernel it is, between unsqueeze and squeeze."""

from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn as nn

from ..errors import UnsupportedModelError


def conv1d_as_conv2d(gm: fx.GraphModule, state) -> None:
    """Every Conv1d call becomes unsqueeze(2) -> Conv2d with a (1, k) kernel (same name) -> squeeze(2):
    the same map, so the construction's Conv2d pairs (groups, taps, constant channels) apply."""
    modules = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.Conv1d):
            continue
        conv = modules[node.target]
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str) and conv.padding != "valid":
            raise UnsupportedModelError(f"Conv1d {node.target!r}: padding={conv.padding!r}, padding_mode="
                                        f"{conv.padding_mode!r}; only explicit zero padding is supported")
        padding = (0, 0) if conv.padding == "valid" else (0, conv.padding[0])
        new = nn.Conv2d(conv.in_channels, conv.out_channels, (1, conv.kernel_size[0]), stride=(1, conv.stride[0]),
                        padding=padding, dilation=(1, conv.dilation[0]), groups=conv.groups,
                        bias=conv.bias is not None, dtype=conv.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(conv.weight.unsqueeze(2))
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
        gm.delete_submodule(node.target)
        gm.add_submodule(node.target, new)
        with gm.graph.inserting_before(node):
            node.args = (gm.graph.call_method("unsqueeze", (node.args[0], 2)), *node.args[1:])
        with gm.graph.inserting_after(node):
            out = gm.graph.call_method("squeeze", (node, 2))
        node.replace_all_uses_with(out, delete_user_cb=lambda user: user is not out)
    gm.recompile()
