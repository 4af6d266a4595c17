"""Rules of the parameter-free normalisations: layer_norm and group_norm once their affine weight
and bias are taken out as diagonal pairs (:mod:`models.trace.affine`)."""

from __future__ import annotations

import torch.fx as fx
import torch.nn.functional as F

from .base import Call, Rule, always

_NO_RULE = "its Lipschitz constant is unbounded as the variance goes to 0"


def _plain(call: Call) -> str | None:
    if any(isinstance(a, fx.Node) for a in (call.arg(2, "weight"), call.arg(3, "bias"))):
        return "normalisation weight or bias computed from activations"
    return None


RULES = [
    Rule("layer_norm", "layer_norm over the last dimension (its affine weight and bias become a diagonal pair)",
         (F.layer_norm,), check=_plain, sign=always(False), interval=None, no_interval=_NO_RULE),
    Rule("group_norm", "group_norm (its affine weight and bias become a diagonal pair)", (F.group_norm,),
         check=_plain, sign=always(False), interval=None, no_interval=_NO_RULE),
]
