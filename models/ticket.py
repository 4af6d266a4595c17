"""Tickets: a plain dict from which the pruned network is rebuilt exactly, with no solver.

A ticket holds, per pair, the spec that regenerates its seeded random values and its packed
bool masks, plus the target's description, the options, and check inputs with the pruned
network's outputs on them (``torch.load(..., weights_only=True)`` reads it: tensors, numbers,
strings only). :func:`rebuild` regenerates the random values, applies the masks and returns
the identical pruned network; :func:`rebuilt_construction` recomputes every weight error from
the masks, so ``lottery verify`` trusts nothing the solver reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn

from .construct import ConstructOptions, Construction, LayerSolution
from .graph import TargetLayer, trace_target
from .problems import errors_from_masks
from .pruned import assemble
from .random_net import LayerSpec, generate

TICKET_FORMAT = "lottery-ticket"
#: 2: options nested as {construction fields..., "solve": SolveOptions fields}; 1: flat
TICKET_VERSION = 2


class TicketError(ValueError):
    """The ticket does not fit the target or is not a ticket."""


def _pack(mask: torch.Tensor) -> dict[str, Any]:
    flat = mask.reshape(-1).numpy().astype(bool)
    return {"shape": list(mask.shape), "bits": torch.from_numpy(np.packbits(flat))}


def _unpack(packed: dict[str, Any]) -> torch.Tensor:
    count = int(np.prod(packed["shape"])) if packed["shape"] else 1
    flat = np.unpackbits(packed["bits"].numpy(), count=count).astype(bool)
    return torch.from_numpy(flat.reshape(packed["shape"]))


def ticket_dict(c: Construction, target_desc: dict[str, Any], check_inputs: torch.Tensor) -> dict[str, Any]:
    """A plain dict (tensors, numbers, strings) from which the pruned network is rebuilt."""
    with torch.no_grad():
        outputs = c.pruned(check_inputs)
    return {
        "format": TICKET_FORMAT,
        "version": TICKET_VERSION,
        "target": target_desc,
        "input_shape": list(c.input_shape),
        "input_domain": list(c.domain),
        "variant": c.variant,
        "options": c.options.to_dict(),
        "layers": [s.to_dict() for s in c.specs],
        "masks": [{k: _pack(v) for k, v in sol.masks.items()} for sol in c.solutions],
        "check": {"inputs": check_inputs.clone(), "outputs": outputs.clone()},
    }


def ticket_options(ticket: dict[str, Any]) -> ConstructOptions:
    """The construction options recorded in a ticket (version 1's flat layout converted)."""
    d = dict(ticket["options"])
    if ticket.get("version", 1) == 1:
        solve = dict(d.pop("solver_options", {}), objective=d.pop("objective"), eps=d.pop("eps"),
                     workers=d.pop("workers", None))
        d["solve"] = solve
    return ConstructOptions.from_dict(d)


@dataclass
class Rebuilt:
    """A ticket's pruned network and what it was assembled from."""

    pruned: fx.GraphModule
    specs: list[LayerSpec]
    folded: fx.GraphModule
    layers: list[TargetLayer]
    values: list[dict[str, torch.Tensor]]  # the random values (now also the network's parameters)
    masks: list[dict[str, torch.Tensor]]


def rebuild(ticket: dict[str, Any], target: nn.Module) -> Rebuilt:
    """The pruned network of a ticket: random values regenerated from the seeds, masks applied."""
    if ticket.get("format") != TICKET_FORMAT:
        raise TicketError(f"not a lottery ticket (format {ticket.get('format')!r}, expected {TICKET_FORMAT!r})")
    domain = tuple(ticket["input_domain"])
    folded, layers = trace_target(target, input_nonneg=domain[0] >= 0)
    specs = [LayerSpec.from_dict(d) for d in ticket["layers"]]
    if [s.name for s in specs] != [l.name for l in layers]:
        raise TicketError(f"the ticket's layers {[s.name for s in specs]} do not match the target's {[l.name for l in layers]}")
    variant = ticket["variant"]
    values = [generate(s, dense=variant == "dense") for s in specs]
    masks = [{k: _unpack(v) for k, v in m.items()} for m in ticket["masks"]]
    return Rebuilt(assemble(folded, specs, values, masks, variant), specs, folded, layers, values, masks)


def rebuilt_construction(model: nn.Module, rebuilt: Rebuilt, ticket: dict[str, Any]) -> Construction:
    """A Construction of a rebuilt ticket whose layer errors are recomputed from the masks."""
    sols = []
    for layer, spec, values, masks in zip(rebuilt.layers, rebuilt.specs, rebuilt.values, rebuilt.masks):
        we, be = errors_from_masks(layer, spec, values, masks)
        sols.append(LayerSolution(masks=masks, weight_error=we, bias_error=be, status_counts={}, seconds=0.0,
                                  backend="ticket", problems=0))
    return Construction(target=model, folded=rebuilt.folded, layers=rebuilt.layers, specs=rebuilt.specs,
                        solutions=sols, pruned=rebuilt.pruned, input_shape=tuple(ticket["input_shape"]),
                        domain=tuple(ticket["input_domain"]), options=ticket_options(ticket),
                        variant=ticket["variant"], seconds={})
