"""Checkpoints as they are found: the state_dict inside, chosen and loaded by torch's own rules.

A file is told by its content, never its extension (:func:`sniff`): torch.save's zip, torch's
legacy pickle or tar, TorchScript's zip, or safetensors. A torch checkpoint is read with
``torch.load(weights_only=True)``; objects it pickles beside the tensors (a numpy scalar, an
``argparse.Namespace`` of hyperparameters, a Lightning ``AttributeDict``) are read as inert
placeholders - no code of the file runs - and only tensors are used.

The state_dict is found by matching the architecture's own keys (:func:`fit`): every dict of
tensors in the checkpoint, at any depth (``state_dict``, ``model``, ``model_ema``, ...), is a
candidate, and a key prefix is whatever stands before the architecture's keys (``module.`` from
DataParallel, ``_orig_mod.`` from torch.compile, ``model.`` from a LightningModule's attribute,
several stacked). A candidate fits when, after its prefix, it holds every parameter and buffer of
the architecture with the same shapes and nothing else under that prefix. When several fit, the
rule is: the first in the checkpoint's order, except that a candidate named with ``ema`` (an
exponential moving average of the weights) comes after those that are not; ``--state-dict-key``
chooses another (``model_ema``, ``state_dict/model_ema.``). The load itself is
``nn.Module.load_state_dict``: what torch accepts with ``strict=True`` is accepted - a BatchNorm
``num_batches_tracked`` buffer that an old torch did not save is filled by torch (it plays no part
in eval) - with the same strictness for every other parameter and buffer. Every step is noted.
"""

from __future__ import annotations

import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .errors import LotteryError


class CheckpointError(LotteryError, ValueError):
    """The checkpoint cannot be read or does not fit the architecture (the message says why)."""


#: state_dicts nested deeper than this in a checkpoint are not looked for
MAX_DEPTH = 4
#: buffers the architecture may lack in the file: torch fills them or eval does not read them
EVAL_UNUSED = ("num_batches_tracked",)


def sniff(path: Path) -> str:
    """The file's format from its bytes: 'safetensors', 'torchscript', 'torch' (torch.save's zip, or
    torch's legacy pickle or tar format) or 'unknown'."""
    with open(path, "rb") as fh:
        head = fh.read(264)
    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except zipfile.BadZipFile:  # a damaged torch.save file: torch.load says what is wrong
            return "torch"
        scripted = any("/code/" in n or n.endswith("/constants.pkl") for n in names)
        return "torchscript" if scripted else "torch"
    if head[:1] == b"\x80":  # a pickle (protocol 2+): torch.save before torch 1.6
        return "torch"
    if head[257:262] == b"ustar":  # torch's legacy tar format
        return "torch"
    if len(head) > 8 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") <= path.stat().st_size - 8:
        return "safetensors"  # an 8-byte header length, then the JSON header
    return "unknown"


class Inert:
    """What an object a checkpoint pickles beside its tensors is read as: its arguments and state are
    kept, none of its code exists here, and nothing uses it."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state):
        self.state = state

    def __call__(self, *args, **kwargs):  # a pickled function's result
        return Inert(*args, **kwargs)


def read(path: Path, notes: list[str]) -> Any:
    """The checkpoint object in ``path`` (torch or safetensors, by content)."""
    fmt = sniff(path)
    if fmt == "safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata()
            tensors = load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types for a damaged file
            raise CheckpointError(f"cannot read {str(path)!r} as safetensors ({_first_line(exc)})") from exc
        notes.append("read as safetensors" + (f" (metadata {_short(meta)})" if meta else ""))
        return tensors
    if fmt == "torchscript":
        raise CheckpointError(f"{str(path)!r} is a TorchScript program, not a state_dict: omit --arch to read it")
    if fmt == "unknown":
        first = path.read_bytes()[:8]
        raise CheckpointError(f"cannot load {str(path)!r}: it is neither a torch checkpoint (torch.save's zip, pickle "
                              f"or tar) nor safetensors ({f'its first bytes: {first!r}' if first else 'an empty file'})")
    unsafe: list[str] = []
    try:
        with open(path, "rb") as fh:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(fh)
    except Exception:  # torch's legacy formats cannot be scanned: weights_only decides alone
        pass
    try:
        obj = _load_inert(path, unsafe)
    except Exception as exc:
        raise CheckpointError(
            f"cannot load {str(path)!r} with torch.load(weights_only=True) ({_first_line(exc)}); for a pickled "
            f"full module you trust, pass --arch full") from exc
    if isinstance(obj, Inert):
        raise CheckpointError(f"{str(path)!r} holds a pickled object ({_listed(sorted(unsafe))}), not a state_dict: a full "
                              f"module? pass --arch full only if you trust the file (unpickling runs its code), or "
                              f"save its state_dict()")
    notes.append(f"read with torch.load(weights_only=True) ({'zip' if zipfile.is_zipfile(path) else 'legacy'} format)")
    if unsafe:
        notes.append(f"{len(unsafe)} kind(s) of object beside the tensors read as inert placeholders, none of their "
                     f"code run: {_listed(unsafe)}")
    return obj


def _load_inert(path: Path, unsafe: list[str]) -> Any:
    """torch.load(weights_only=True) with every global it does not allow read as :class:`Inert`; where
    one is a dict subclass (its items set by the unpickler, which sets them on dicts only), again with
    the non-numpy ones read as plain OrderedDicts."""
    def load(names):
        with torch.serialization.safe_globals(names), open(path, "rb") as fh:  # a file object: no dispatch on the name
            return torch.load(fh, map_location="cpu", weights_only=True)

    try:
        return load([(Inert, name) for name in unsafe])
    except Exception as exc:
        if not unsafe or "SETITEM" not in str(exc):
            raise
    return load([(Inert if name.startswith("numpy") else OrderedDict, name) for name in unsafe])


def candidates(obj: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], dict[str, torch.Tensor]]]:
    """Every non-empty dict of tensors in a checkpoint (with string keys), depth first in the
    checkpoint's order, each with its path of keys."""
    if not isinstance(obj, dict):
        return []
    out = []
    if obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        out.append((path, obj))
    if len(path) < MAX_DEPTH:
        for k, v in obj.items():
            if isinstance(v, dict):
                out.extend(candidates(v, (*path, str(k))))
    return out


def _prefixes(own: set[str], keys) -> dict[str, int]:
    """Per key prefix, how many of ``keys`` are an architecture key after it."""
    counts: dict[str, int] = {}
    for key in keys:
        parts = key.split(".")
        for i in range(len(parts)):
            if ".".join(parts[i:]) in own:
                prefix = ".".join(parts[:i]) + ("." if i else "")
                counts[prefix] = counts.get(prefix, 0) + 1
    return counts


def _problems(model: nn.Module, sd: dict[str, torch.Tensor], prefix: str) -> dict[str, list[str]]:
    """What keeps ``sd`` (its keys under ``prefix``) from loading into ``model`` strictly."""
    own = model.state_dict()
    mine = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    missing = [k for k in own if k not in mine and not k.endswith(EVAL_UNUSED)]
    unexpected = [prefix + k for k in mine if k not in own]
    shapes = [f"{prefix + k}: file {tuple(mine[k].shape)} vs arch {tuple(own[k].shape)}"
              for k in own if k in mine and mine[k].shape != own[k].shape]
    return {"missing keys": missing, "unexpected keys": unexpected, "shape mismatches": shapes}


def _name(path: tuple[str, ...], prefix: str) -> str:
    return "/".join(path) + (("/" if path else "") + prefix if prefix else "") or "(the top level)"


def _is_ema(path: tuple[str, ...], prefix: str) -> bool:
    return any("ema" in part.lower().split("_") or part.lower().startswith("ema") or part.lower().endswith("ema")
               for part in (*path, *prefix.split(".")) if part)


def fit(model: nn.Module, obj: Any, notes: list[str], key: str | None = None,
        what: str = "the architecture") -> OrderedDict:
    """The state_dict in checkpoint ``obj`` that fits ``model`` (module docstring's rule, or ``key``:
    a path of nested entries, ``a/b``, optionally ending in a key prefix, ``a/model_ema.``), its keys
    without their prefix (torch's metadata kept, so its version rules apply). Raises CheckpointError
    with what was found when none fits."""
    found = candidates(obj)
    if not found:
        raise CheckpointError(f"the checkpoint holds no state_dict (a dict of tensors); it holds {_what(obj)}")
    own = set(model.state_dict())
    options = []  # (path, prefix, problems)
    for path, sd in found:
        for prefix, count in sorted(_prefixes(own, sd).items(), key=lambda kv: -kv[1]):
            options.append((path, prefix, _problems(model, sd, prefix), count))
    if key is not None:
        *parts, last = key.strip("/").split("/") if key.strip("/") else [""]
        want_path, want_prefix = (tuple(parts), last) if last.endswith(".") else ((*parts, last) if last else (), None)
        chosen = [o for o in options if o[0] == want_path and (want_prefix is None or o[1] == want_prefix)]
        if not chosen:
            names = sorted({_name(p, "") for p, _ in found})
            raise CheckpointError(f"--state-dict-key {key!r} names no state_dict of the checkpoint that holds this "
                                  f"architecture's keys; its state_dicts: {_listed(names)}")
        options = chosen
    fitting = [o for o in options if not any(o[2].values())]
    if not fitting:
        best = max(options, key=lambda o: o[3]) if options else None
        if best is None:
            raise CheckpointError(f"no state_dict in the checkpoint holds any key of {what} "
                                  f"({_listed(sorted(own))}); the checkpoint's: {_listed(sorted({_name(p, '') for p, _ in found}))}")
        path, prefix, problems, _ = best
        parts = [f"{what} {_listed(keys)}" for what, keys in problems.items() if keys]
        raise CheckpointError(f"the state_dict does not fit {what}: " + ", ".join(parts)
                              + f" (the closest of the checkpoint's state_dicts: {_name(path, prefix)})")
    fitting.sort(key=lambda o: _is_ema(o[0], o[1]))  # stable: checkpoint order, EMA copies last
    path, prefix = fitting[0][0], fitting[0][1]
    sd = dict(found)[path]
    if path:
        others = []
        node = obj
        for part in path:
            others.append(sorted(str(k) for k in node if str(k) != part))
            node = node[part]
        left = [k for level in others for k in level]
        notes.append(f"state_dict taken from the checkpoint's {'/'.join(path)!r} entry"
                     + (f" (left out: {_listed(left)})" if left else ""))
    rest = [_name(p, q) for p, q, _, _ in fitting[1:]]
    if rest:
        notes.append(f"{_name(path, prefix)} chosen among the state_dicts that fit ({_listed(rest)} also fit; "
                     f"--state-dict-key chooses)")
    outside = [k for k in sd if not k.startswith(prefix)]
    if outside:
        notes.append(f"{len(outside)} tensor(s) outside prefix {prefix!r} left out (not this architecture's): "
                     f"{_listed(outside)}")
    out = OrderedDict((k, v) for k, v in sd.items() if k.startswith(prefix))
    meta = getattr(sd, "_metadata", None)
    if meta is not None:
        out._metadata = OrderedDict(meta)
    if prefix:
        for part in prefix[:-1].split("."):  # one component at a time: torch's helper handles one
            torch.nn.modules.utils.consume_prefix_in_state_dict_if_present(out, part + ".")
        notes.append(f"prefix {prefix!r} removed from every key")
    return out


def load_into(model: nn.Module, sd: OrderedDict, notes: list[str]) -> nn.Module:
    """``model.load_state_dict`` by torch's rules (:func:`fit` has checked the keys and shapes): a
    BatchNorm ``num_batches_tracked`` the file lacks is filled by torch or left at its value (eval
    does not read it), and noted."""
    own = model.state_dict()
    lacking = [k for k in own if k not in sd]
    result = model.load_state_dict(sd, strict=False)
    if result.unexpected_keys or any(not k.endswith(EVAL_UNUSED) for k in result.missing_keys):
        raise CheckpointError(f"the state_dict does not load: missing keys {_listed(result.missing_keys)}, "
                              f"unexpected keys {_listed(result.unexpected_keys)}")
    if lacking:
        notes.append(f"{len(lacking)} BatchNorm num_batches_tracked buffer(s) absent from the file (saved by an "
                     f"older torch): filled by torch, not used in eval")
    return model


def _what(obj: Any) -> str:
    def kind(v: Any) -> str:
        return "a pickled object" if isinstance(v, Inert) else type(v).__name__

    if isinstance(obj, dict):
        return f"a dict with entries {_listed([f'{k!r} ({kind(v)})' for k, v in obj.items()])}"
    return kind(obj)


def _short(meta: dict) -> str:
    text = ", ".join(f"{k}={v}" for k, v in meta.items())
    return text if len(text) <= 120 else text[:117] + "..."


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__


def _listed(keys: list[str], most: int = 10) -> str:
    more = f" and {len(keys) - most} more" if len(keys) > most else ""
    return ", ".join(keys[:most]) + more
