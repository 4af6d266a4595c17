"""The pruned network in formats that need no part of this project: plain tensors and torch.export.

``pruned_state_dict.pt`` holds every ``X_orig * X_mask`` product as plain ``X`` (pruned entries
are exact zeros); ``pruned.pt2`` is a :mod:`torch.export` program of the network with the masks
made permanent, loaded with ``torch.export.load(path).module()``.
"""

from __future__ import annotations

from typing import BinaryIO

import torch
import torch.fx as fx
import torch.nn as nn

from .pruned import to_plain


def export_program(pruned: fx.GraphModule, example: torch.Tensor, fh: BinaryIO) -> None:
    """Write the pruned network, masks made permanent, as a torch.export program (batch size
    dynamic) into the binary file ``fh``: load it with ``torch.export.load(path).module()``."""
    from torch.export import Dim, export

    program = export(to_plain(pruned), (example[:2],), dynamic_shapes=({0: Dim("batch", min=1)},))
    torch.export.save(program, fh)


def plain_state_dict(pruned: nn.Module) -> dict[str, torch.Tensor]:
    """The pruned network's tensors with every ``X_orig`` * ``X_mask`` pair combined into ``X``
    (pruned entries are exact zeros): plain weights, no masks, no solver needed to use them (combine
    layers that regenerate their values from the seed are formed here, :func:`models.pruned.to_plain`)."""
    sd = to_plain(pruned).state_dict()
    out = {}
    for key, value in sd.items():
        if key.endswith("_mask") and key[: -len("_mask")] + "_orig" in sd:
            continue
        if key.endswith("_orig") and key[: -len("_orig")] + "_mask" in sd:
            out[key[: -len("_orig")]] = (value * sd[key[: -len("_orig")] + "_mask"]).detach().clone()
        else:
            out[key] = value.detach().clone()
    return out
