"""Tickets: a plain dict from which the pruned network is rebuilt exactly, with no solver.

A ticket holds, per pair, the spec that regenerates its seeded random values and its packed
bool masks, plus the target's description, the options, and check inputs with the pruned
network's outputs on them (``torch.load(..., weights_only=True)`` reads it: tensors, numbers,
strings only). :func:`rebuild` regenerates the random values, applies the masks and returns
the identical pruned network; :func:`rebuilt_construction` recomputes every weight error from
the masks, so ``lottery verify`` trusts nothing the solver reported.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn

from .construct import ConstructOptions, Construction, LayerSolution, propagate_shapes
from .graph import TargetLayer, trace_target
from .memory import MemoryPlan, plan
from .problems import errors_from_masks
from .pruned import assemble
from .random_net import LAYOUTS, VARIANTS, LayerSpec, generate

TICKET_FORMAT = "lottery-ticket"
#: 2: options nested as {construction fields..., "solve": SolveOptions fields}; 1: flat
TICKET_VERSION = 2


class TicketError(ValueError):
    """The ticket is unreadable, malformed, tampered with, or does not fit the target."""


TARGET_FILE = re.compile(r"target(\.[A-Za-z0-9]{1,16})?")  # the copy save_run writes: no path, no ".."
SHA256 = re.compile(r"[0-9a-f]{64}")
MASK_KEYS = ("u", "a_bias", "B")


def _bad(where: str, what: str) -> TicketError:
    return TicketError(f"ticket.pt is malformed or tampered with: {where} {what}")


def _check(ok: bool, where: str, what: str) -> None:
    if not ok:
        raise _bad(where, what)


def _is_int(x: Any, low: int = 0) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and low <= x < 2**63


def _pair(x: Any, low: int) -> bool:
    return isinstance(x, (list, tuple)) and len(x) == 2 and all(_is_int(v, low) for v in x)


def _spec(d: Any, where: str) -> LayerSpec:
    """A LayerSpec from an untrusted dict: every field present, of its type and in its range."""
    _check(isinstance(d, dict), where, f"must be a dict; got {type(d).__name__}")
    names = [f.name for f in fields(LayerSpec)]
    _check(set(d) == set(names), where, f"must have the fields {names}; got {sorted(d)}")
    checks = {
        "name": isinstance(d["name"], str), "kind": d["kind"] in ("linear", "conv2d"),
        "d_in": _is_int(d["d_in"], 1), "d_out": _is_int(d["d_out"], 1), "n": _is_int(d["n"], 1),
        "kernel": _pair(d["kernel"], 1), "stride": _pair(d["stride"], 1), "padding": _pair(d["padding"], 0),
        "dilation": _pair(d["dilation"], 1), "layout": d["layout"] in LAYOUTS,
        "input_nonneg": isinstance(d["input_nonneg"], bool), "has_bias": isinstance(d["has_bias"], bool),
        "scale": isinstance(d["scale"], (int, float)) and not isinstance(d["scale"], bool)
        and math.isfinite(d["scale"]) and d["scale"] > 0,
        "seed": _is_int(d["seed"]),
        "const_tap": _pair(d["const_tap"], 0) and all(t < k for t, k in zip(d["const_tap"], d["kernel"] or (0, 0))),
    }
    for key, ok in checks.items():
        _check(ok, f"{where}.{key}", f"has an invalid value {d[key]!r}")
    return LayerSpec.from_dict(d)


def _mask_shapes(spec: LayerSpec) -> dict[str, list[int]]:
    kh, kw = spec.kernel
    b = [spec.d_out, spec.hidden] + ([] if spec.kind == "linear" else [kh, kw])
    return {"u": [spec.d_in, spec.units_per_input], "a_bias": [spec.hidden], "B": b}


def validate_ticket(ticket: Any) -> list[LayerSpec]:
    """Check every field of an untrusted ticket for type, shape and range; returns its specs.

    Raises TicketError naming the first field that is wrong."""
    _check(isinstance(ticket, dict), "the ticket", f"must be a dict; got {type(ticket).__name__}")
    _check(ticket.get("format") == TICKET_FORMAT, "format", f"must be {TICKET_FORMAT!r}; got {ticket.get('format')!r}")
    _check(ticket.get("version") in (1, 2), "version", f"must be 1 or 2; got {ticket.get('version')!r}")
    target = ticket.get("target")
    _check(isinstance(target, dict), "target", "must be a dict")
    _check(isinstance(target.get("file"), str) and TARGET_FILE.fullmatch(target["file"]) is not None,
           "target.file", f"must name the run directory's target copy (target.EXT); got {target.get('file')!r}")
    _check(isinstance(target.get("sha256"), str) and SHA256.fullmatch(target["sha256"]) is not None,
           "target.sha256", f"must be a hex SHA-256; got {target.get('sha256')!r}")
    _check(target.get("arch") is None or isinstance(target.get("arch"), str), "target.arch", "must be a string or None")
    shape = ticket.get("input_shape")
    _check(isinstance(shape, list) and 1 <= len(shape) <= 4 and all(_is_int(v, 1) for v in shape),
           "input_shape", f"must be a list of 1 to 4 positive ints; got {shape!r}")
    domain = ticket.get("input_domain")
    _check(isinstance(domain, list) and len(domain) == 2
           and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in domain)
           and domain[0] <= domain[1], "input_domain", f"must be [LO, HI] with LO <= HI; got {domain!r}")
    _check(ticket.get("variant") in VARIANTS, "variant", f"must be one of {list(VARIANTS)}; got {ticket.get('variant')!r}")
    _check(isinstance(ticket.get("options"), dict), "options", "must be a dict")
    try:
        ticket_options(ticket)
    except (TypeError, ValueError, KeyError) as exc:
        raise _bad("options", f"are invalid ({type(exc).__name__}: {exc})") from exc
    layers, masks = ticket.get("layers"), ticket.get("masks")
    _check(isinstance(layers, list) and len(layers) >= 1, "layers", "must be a non-empty list")
    _check(isinstance(masks, list) and len(masks) == len(layers), "masks", f"must be a list of {len(layers)} dicts")
    specs = [_spec(d, f"layers[{i}]") for i, d in enumerate(layers)]
    for i, (spec, packed) in enumerate(zip(specs, masks)):
        _check(isinstance(packed, dict) and sorted(packed) == sorted(MASK_KEYS), f"masks[{i}]",
               f"must have the keys {list(MASK_KEYS)}")
        for key, want in _mask_shapes(spec).items():
            where = f"masks[{i}].{key}"
            m = packed[key]
            _check(isinstance(m, dict) and m.get("shape") == want, where, f"must have shape {want}")
            bits = m.get("bits")
            _check(isinstance(bits, torch.Tensor) and bits.dtype == torch.uint8 and bits.dim() == 1
                   and bits.numel() == (math.prod(want) + 7) // 8, where, "bits do not match its shape")
    check = ticket.get("check")
    _check(isinstance(check, dict), "check", "must be a dict")
    inputs, outputs = check.get("inputs"), check.get("outputs")
    _check(isinstance(inputs, torch.Tensor) and inputs.is_floating_point() and inputs.dim() == 1 + len(shape)
           and list(inputs.shape[1:]) == shape and len(inputs) >= 1, "check.inputs",
           f"must be float inputs of shape (k, {', '.join(map(str, shape))})")
    _check(isinstance(outputs, torch.Tensor) and outputs.is_floating_point() and outputs.dim() >= 1
           and len(outputs) == len(inputs), "check.outputs", f"must be {len(inputs)} float outputs")
    return specs


def load_ticket(path: Path) -> dict[str, Any]:
    """Read and validate an untrusted ticket file (tensors, numbers and strings only: never unpickled)."""
    try:
        ticket = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged zip or a pickle asking for more than tensors: not a ticket
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "no detail"
        raise TicketError(f"{str(path)!r} is not a readable ticket ({type(exc).__name__}: {first[:200]})") from exc
    validate_ticket(ticket)
    return ticket


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
    plan: MemoryPlan


def _check_fits(spec: LayerSpec, layer: TargetLayer, i: int) -> None:
    """The spec must describe the target's layer exactly (the target's SHA-256 is checked apart)."""
    conv = layer.conv or {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1)}
    want = {"kind": layer.kind, "d_in": layer.d_in, "d_out": layer.d_out, "kernel": tuple(layer.kernel),
            "stride": tuple(conv["stride"]), "padding": tuple(conv["padding"]), "dilation": tuple(conv["dilation"]),
            "input_nonneg": layer.input_nonneg,
            "has_bias": layer.bias is not None}
    for key, value in want.items():
        if getattr(spec, key) != value:
            raise TicketError(f"ticket.pt does not fit the target: layers[{i}].{key} is {getattr(spec, key)!r} but "
                              f"the target's layer {layer.name!r} has {value!r}")


def rebuild(ticket: dict[str, Any], target: nn.Module, memory_budget: int | None = None) -> Rebuilt:
    """The pruned network of a (validated) ticket: random values regenerated from the seeds, masks applied."""
    specs = validate_ticket(ticket)
    domain = tuple(ticket["input_domain"])
    folded, layers = trace_target(target, input_nonneg=domain[0] >= 0)
    if [s.name for s in specs] != [l.name for l in layers]:
        raise TicketError(f"the ticket's layers {[s.name for s in specs]} do not match the target's {[l.name for l in layers]}")
    for i, (spec, layer) in enumerate(zip(specs, layers)):
        _check_fits(spec, layer, i)
    shapes = propagate_shapes(folded, tuple(ticket["input_shape"]))
    memory = plan(layers, specs, shapes, ticket["variant"], 1, memory_budget)  # before anything is allocated
    variant = ticket["variant"]
    values = [generate(s, dense=variant == "dense") for s in specs]
    masks = [{k: _unpack(v) for k, v in m.items()} for m in ticket["masks"]]
    return Rebuilt(assemble(folded, specs, values, masks, variant), specs, folded, layers, values, masks, memory)


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
                        variant=ticket["variant"], seconds={}, plan=rebuilt.plan)
