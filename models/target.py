"""Loading a target network: state_dict (.pt/.pth/.safetensors) + arch, TorchScript, or a module."""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
import torch.nn as nn

from .zoo import LeNet5, mlp


class TargetError(ValueError):
    """The target file or architecture cannot be used (the message says what and why)."""


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TargetError(
            f"cannot load {str(path)!r} as a state_dict with torch.load(weights_only=True) "
            f"({type(exc).__name__}: {str(exc).splitlines()[0]}); for a pickled full module you trust, "
            f"pass --arch full"
        ) from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise TargetError(f"{str(path)!r} does not hold a state_dict (a dict of tensors); got {type(obj).__name__}")
    return obj


def _check_finite(sd: dict[str, torch.Tensor], path: Path) -> None:
    for key, value in sd.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise TargetError(f"target {str(path)!r}: parameter {key!r} holds NaN or inf values")


def _mlp_from_state(sd: dict[str, torch.Tensor]) -> nn.Module:
    weights = [(k, v) for k, v in sd.items() if v.dim() == 2 and k.endswith("weight")]
    if not weights:
        raise TargetError(f"--arch mlp needs 2-D '*weight' tensors in the state_dict; got keys {list(sd)[:8]}")
    sizes = [weights[0][1].shape[1]]
    for (k_prev, w_prev), (k, w) in zip(weights[:-1], weights[1:]):
        if w.shape[1] != w_prev.shape[0]:
            raise TargetError(
                f"--arch mlp: consecutive weights do not chain: {k_prev!r} has shape {tuple(w_prev.shape)} "
                f"but {k!r} has shape {tuple(w.shape)} (expected ({'*'}, {w_prev.shape[0]}))"
            )
    sizes += [w.shape[0] for _, w in weights]
    biases = []
    for k, w in weights:
        b = sd.get(k[: -len("weight")] + "bias")
        if b is not None and tuple(b.shape) != (w.shape[0],):
            raise TargetError(f"--arch mlp: bias of {k!r} has shape {tuple(b.shape)}, expected ({w.shape[0]},)")
        biases.append(b is not None)
    model = mlp(sizes, biases)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for lin, (k, w) in zip(linears, weights):
            lin.weight.copy_(w)
            if lin.bias is not None:
                lin.bias.copy_(sd[k[: -len("weight")] + "bias"])
    return model


def _strict_load(model: nn.Module, sd: dict[str, torch.Tensor], arch: str) -> nn.Module:
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: file {tuple(sd[k].shape)} vs arch {tuple(own[k].shape)}"
              for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {missing}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected}")
        if shapes:
            parts.append(f"shape mismatches [{'; '.join(shapes)}]")
        raise TargetError(f"the state_dict does not fit --arch {arch}: " + ", ".join(parts))
    model.load_state_dict(sd)
    return model


def _from_torchscript(path: Path) -> nn.Module:
    import warnings

    from .torchscript import TorchScriptError, graph_module_from_script

    with warnings.catch_warnings():  # torch 2.9+ deprecates TorchScript; reading users' files is still wanted
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            scripted = torch.jit.load(str(path), map_location="cpu")
        except RuntimeError as exc:
            raise TargetError(
                f"{str(path)!r} is not a TorchScript file; a state_dict needs --arch mlp | lenet5 | "
                f"module:pkg.mod:Class"
            ) from exc
    try:
        module = graph_module_from_script(scripted)
    except TorchScriptError as exc:
        raise TargetError(f"TorchScript target {str(path)!r}: {exc}. Alternatively save the state_dict and pass "
                          f"--arch module:pkg.mod:Class") from exc
    _check_finite(module.state_dict(), path)
    return module


def load_target(path: str | Path, arch: str | None) -> nn.Module:
    """Load the target network in eval mode.

    ``arch``: ``mlp``, ``lenet5``, ``module:pkg.mod:Class`` (a state_dict file), ``full`` (a
    pickled module, loaded with weights_only=False: only for files you trust) or None for a
    TorchScript file.
    """
    path = Path(path)
    if not path.is_file():
        raise TargetError(f"target file {str(path)!r} does not exist")
    if arch is None:
        return _from_torchscript(path).eval()
    if arch == "full":
        model = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(model, nn.Module):
            raise TargetError(f"--arch full: {str(path)!r} holds a {type(model).__name__}, not an nn.Module")
        return model.eval()
    sd = _load_state_dict(path)
    _check_finite(sd, path)
    if arch == "mlp":
        return _mlp_from_state(sd).eval()
    if arch == "lenet5":
        biases = {k: f"{k}.bias" in sd for k in LeNet5.LAYERS}
        return _strict_load(LeNet5(biases), sd, arch).eval()
    if arch.startswith("module:"):
        spec = arch[len("module:"):]
        mod_name, _, cls_name = spec.rpartition(":")
        if not mod_name or not cls_name:
            raise TargetError(f"--arch module:... must be module:pkg.mod:Class; got {arch!r}")
        try:
            cls = getattr(importlib.import_module(mod_name), cls_name)
        except (ImportError, AttributeError) as exc:
            raise TargetError(f"--arch {arch}: cannot import {cls_name!r} from {mod_name!r} ({exc})") from exc
        return _strict_load(cls(), sd, arch).eval()
    raise TargetError(f"unknown --arch {arch!r}; expected mlp, lenet5, module:pkg.mod:Class, full, or none for TorchScript")
