"""Loading a target network: a checkpoint (torch or safetensors, whatever its extension) + arch,
TorchScript, a pickled module, or a Hugging Face ``save_pretrained`` folder (config.json + safetensors
weights). How a checkpoint's state_dict is found and loaded: :mod:`models.checkpoint`."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import torch
import torch.nn as nn

from solver.files import sha256_bytes, sha256_file

from .errors import LotteryError
from . import checkpoint
from .checkpoint import _first_line, _listed
from .zoo import LeNet5, mlp


class TargetError(LotteryError, ValueError):
    """The target file or architecture cannot be used (the message says what and why)."""


#: |weight| above this is refused as absurd for a trained network (a damaged file), unless allowed
MAX_ABS_WEIGHT = 1e4


#: key prefixes an MLP's state_dict (no architecture to match keys against) may carry: DataParallel's
#: and torch.compile's, removed where every key has them (stacked or not)
MLP_PREFIXES = ("module.", "_orig_mod.")


def _mlp_state(obj, path: Path, notes: list[str], key: str | None) -> dict[str, torch.Tensor]:
    """An MLP's state_dict in a checkpoint: ``key``'s entry, else the first dict of tensors holding 2-D
    weights (EMA copies last); DataParallel / torch.compile prefixes removed."""
    found = checkpoint.candidates(obj)
    if key is not None:
        found = [(p, sd) for p, sd in found if "/".join(p) == key.strip("/")]
    found = [(p, sd) for p, sd in found if any(v.dim() == 2 and k.endswith("weight") for k, v in sd.items())]
    if not found:
        raise TargetError(f"{str(path)!r} holds no state_dict (a dict of tensors) with 2-D '*weight' tensors"
                          + (f" under --state-dict-key {key!r}" if key is not None else "")
                          + f" for --arch mlp; it holds {checkpoint._what(obj)}")
    found.sort(key=lambda f: checkpoint._is_ema(f[0], ""))
    where, sd = found[0]
    if where:
        notes.append(f"state_dict taken from the checkpoint's {'/'.join(where)!r} entry")
    changed = True
    while changed:
        changed = False
        for prefix in MLP_PREFIXES:
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix):]: v for k, v in sd.items()}
                notes.append(f"prefix {prefix!r} removed from every key")
                changed = True
    return sd


def _check_values(sd: dict[str, torch.Tensor], path: Path, max_abs: float = MAX_ABS_WEIGHT) -> None:
    """Refuse non-finite tensors, and weights larger than ``max_abs`` (BatchNorm statistics excepted)."""
    for key, value in sd.items():
        if not value.is_floating_point() or value.numel() == 0:
            continue
        if not torch.isfinite(value).all():
            raise TargetError(f"target {str(path)!r}: parameter {key!r} holds NaN or inf values")
        biggest = float(value.abs().max())
        if biggest > max_abs and not key.endswith(("running_mean", "running_var")):
            raise TargetError(f"target {str(path)!r}: parameter {key!r} holds |values| up to {biggest:.3g}, absurd for "
                              f"a trained network (limit {max_abs:g}: a damaged file?); pass --allow-large-weights "
                              f"if they are meant")


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
    used = {k for k, _ in weights} | {k[: -len("weight")] + "bias" for k, _ in weights}
    unused = [k for k in sd if k not in used]
    if unused:
        raise TargetError(f"--arch mlp uses only the Linear weights and biases, but the checkpoint also holds "
                          f"{len(unused)} other tensor(s): {_listed(unused)}; describe the network with "
                          f"--arch module:pkg.mod:Class (or save it as TorchScript) so nothing is dropped")
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


def _fit_and_load(model: nn.Module, obj, path: Path, arch: str, notes: list[str], key: str | None,
                  max_abs: float) -> nn.Module:
    """The checkpoint's state_dict that fits ``model`` (:func:`models.checkpoint.fit`), checked and
    loaded by torch's rules."""
    try:
        sd = checkpoint.fit(model, obj, notes, key, what=f"--arch {arch}")
        _check_values(sd, path, max_abs)
        return checkpoint.load_into(model, sd, notes)
    except checkpoint.CheckpointError as exc:
        raise TargetError(str(exc)) from exc


def _from_torchscript(path: Path, max_abs: float) -> nn.Module:
    import warnings

    from .torchscript import TorchScriptError, graph_module_from_script

    with warnings.catch_warnings():  # torch 2.9+ deprecates TorchScript; reading users' files is still wanted
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            scripted = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:  # torch.jit.load raises RuntimeError, ValueError, ... on other files
            raise TargetError(
                f"{str(path)!r} is not a TorchScript file; a state_dict needs --arch mlp | lenet5 | "
                f"module:pkg.mod:Class"
            ) from exc
    try:
        module = graph_module_from_script(scripted)
    except TorchScriptError as exc:
        raise TargetError(f"TorchScript target {str(path)!r}: {exc}. Alternatively save the state_dict and pass "
                          f"--arch module:pkg.mod:Class") from exc
    _check_values(module.state_dict(), path, max_abs)
    return module


MODULE_ARCH = re.compile(r"module:([A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)*):([A-Za-z_]\w*)(?:\((.*)\))?", re.DOTALL)


def _keywords(arch: str, text: str | None) -> dict:
    """The literal keyword arguments of ``module:pkg.mod:NAME(key=value, ...)``."""
    import ast

    if not text or not text.strip():
        return {}
    try:
        call = ast.parse(f"f({text})", mode="eval").body
    except SyntaxError as exc:
        raise TargetError(f"--arch {arch}: the arguments must be keyword=literal pairs ({exc.msg})") from exc
    if call.args or any(k.arg is None for k in call.keywords):
        raise TargetError(f"--arch {arch}: only keyword arguments are accepted, e.g. NAME(num_classes=10)")
    out = {}
    for k in call.keywords:
        try:
            out[k.arg] = ast.literal_eval(k.value)
        except ValueError as exc:
            raise TargetError(f"--arch {arch}: argument {k.arg!r} must be a literal (number, string, bool, None, "
                              f"tuple, list or dict)") from exc
    return out


def _module_arch(arch: str) -> nn.Module:
    """An instance from ``module:pkg.mod:NAME[(key=value, ...)]``: NAME a module class or a factory."""
    match = MODULE_ARCH.fullmatch(arch)
    if match is None:
        raise TargetError(f"--arch module:... must be module:pkg.mod:NAME or module:pkg.mod:NAME(key=value, ...) "
                          f"(Python names); got {arch!r}")
    mod_name, name, args = match.groups()
    kwargs = _keywords(arch, args)
    try:
        factory = getattr(importlib.import_module(mod_name), name)
    except (ImportError, AttributeError) as exc:
        raise TargetError(f"--arch {arch}: cannot import {name!r} from {mod_name!r} ({exc}); the module must be "
                          f"importable, e.g. installed or on PYTHONPATH") from exc
    if not callable(factory):
        raise TargetError(f"--arch {arch}: {mod_name}.{name} is a {type(factory).__name__}, not a class or function")
    try:
        model = factory(**kwargs)
    except Exception as exc:  # the user's constructor: any error means these arguments do not fit it
        raise TargetError(f"--arch {arch}: {mod_name}.{name}(**{kwargs}) failed ({_first_line(exc)})") from exc
    if not isinstance(model, nn.Module):
        raise TargetError(f"--arch {arch}: {mod_name}.{name}(...) returned a {type(model).__name__}, not an nn.Module")
    return model


#: the --arch of a Hugging Face save_pretrained folder (a directory target means it)
HF_ARCH = "hf"
HF_CONFIG = "config.json"
HF_WEIGHTS = "model.safetensors"
HF_INDEX = "model.safetensors.index.json"  # sharded weights: the index names the shards


def hugging_face_files(folder: Path) -> list[Path]:
    """The files a save_pretrained folder's target is read from: config.json and the safetensors
    weights (one file, or the index and its shards). Pickled weights (pytorch_model.bin) are refused."""
    if not (folder / HF_CONFIG).is_file():
        raise TargetError(f"{str(folder)!r} is a directory without {HF_CONFIG}: a directory target must be a Hugging "
                          f"Face save_pretrained folder (config.json + model.safetensors)")
    if (folder / HF_WEIGHTS).is_file():
        return [folder / HF_CONFIG, folder / HF_WEIGHTS]
    if (folder / HF_INDEX).is_file():
        try:
            shards = sorted(set(json.loads((folder / HF_INDEX).read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise TargetError(f"{str(folder / HF_INDEX)!r} is not a safetensors index ({_first_line(exc)})") from exc
        bad = [name for name in shards if not isinstance(name, str) or Path(name).name != name
               or not name.endswith(".safetensors") or not (folder / name).is_file()]
        if bad:
            raise TargetError(f"{str(folder / HF_INDEX)!r} names shards that are not .safetensors files in the folder: "
                              f"{_listed([str(b) for b in bad])}")
        return [folder / HF_CONFIG, folder / HF_INDEX, *(folder / name for name in shards)]
    pickled = [p.name for p in folder.glob("pytorch_model*.bin")]
    raise TargetError(f"{str(folder)!r} has no {HF_WEIGHTS}" + (
        f" (it holds pickled weights, {_listed(pickled)}, which can run code when read; save them with "
        f"model.save_pretrained(DIR), whose default is safetensors)" if pickled else ""))


def target_sha256(path: Path) -> str:
    """SHA-256 of a target file; of a save_pretrained folder, over its files' names and SHA-256s."""
    if not path.is_dir():
        return sha256_file(path)
    return sha256_bytes("".join(f"{p.name}\0{sha256_file(p)}\n" for p in hugging_face_files(path)).encode())


def _from_hugging_face(folder: Path, max_abs: float, notes: list[str]) -> nn.Module:
    """A transformers model from a save_pretrained folder: the class config.json names (transformers'
    own; custom code is refused), weights from safetensors only, eager attention; every weight of the
    model must come from the folder and every tensor there must be used."""
    files = hugging_face_files(folder)
    try:
        import transformers
    except ImportError as exc:
        raise TargetError(f"{str(folder)!r} is a Hugging Face folder; reading it needs transformers "
                          f"(pip install 'transformers<5': version 5 removed the fx tracer the construction uses)") from exc
    try:
        config = json.loads(files[0].read_text())
    except (OSError, ValueError) as exc:
        raise TargetError(f"{str(files[0])!r} is not JSON ({_first_line(exc)})") from exc
    if not isinstance(config, dict):
        raise TargetError(f"{str(files[0])!r} is not a Hugging Face config (a JSON object)")
    if "auto_map" in config:
        raise TargetError(f"{str(folder)!r} needs custom code (auto_map in config.json); only transformers' own "
                          f"architectures are read (remote code is never run)")
    names = config.get("architectures") or []
    cls = getattr(transformers, names[0], None) if names and isinstance(names[0], str) else None
    if cls is None or not hasattr(cls, "from_pretrained"):
        raise TargetError(f"{str(files[0])!r}: architectures = {names!r} names no transformers model class "
                          f"(transformers {transformers.__version__}); save the folder with save_pretrained")
    try:
        model, info = cls.from_pretrained(str(folder), local_files_only=True, use_safetensors=True,
                                          attn_implementation="eager", output_loading_info=True)
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError, ... on a damaged folder
        raise TargetError(f"{cls.__name__}.from_pretrained({str(folder)!r}) failed ({_first_line(exc)})") from exc
    unfilled = list(info.get("missing_keys", [])) + [str(k[0]) for k in info.get("mismatched_keys", [])]
    if unfilled:
        raise TargetError(f"{str(folder)!r} does not fill {cls.__name__}: weights missing or of another shape "
                          f"({_listed(unfilled)}) would be random")
    if info.get("unexpected_keys"):
        raise TargetError(f"{str(folder)!r} holds tensors {cls.__name__} does not use: "
                          f"{_listed(list(info['unexpected_keys']))}")
    _check_values(model.state_dict(), folder, max_abs)
    notes.append(f"Hugging Face folder: {cls.__name__} (model_type {config.get('model_type')!r}, "
                 f"transformers {transformers.__version__}), {len(files)} files read")
    return model.float().eval()


def load_target(path: str | Path, arch: str | None, max_abs: float = MAX_ABS_WEIGHT,
                notes: list[str] | None = None, state_dict_key: str | None = None) -> nn.Module:
    """Load the target network in eval mode.

    ``path`` a directory: a Hugging Face save_pretrained folder (``arch`` None or ``hf``). A file is
    told by its content, whatever its extension (:func:`models.checkpoint.sniff`). ``arch``: ``mlp``,
    ``lenet5``, ``module:pkg.mod:NAME`` or ``module:pkg.mod:NAME(key=value, ...)`` (NAME a module class
    or a factory function, called with those literal keyword arguments; a checkpoint file, torch or
    safetensors), ``full`` (a pickled module, loaded with weights_only=False: only for files you
    trust) or None for a TorchScript file. The state_dict is found in the checkpoint by matching the
    architecture's keys (nested entries, key prefixes: :mod:`models.checkpoint`; ``state_dict_key``
    chooses among several) and loaded by torch's rules; every step is appended to ``notes``. A
    non-finite value, or a weight above ``max_abs`` in magnitude, is refused naming the tensor.
    """
    notes = [] if notes is None else notes
    path = Path(path)
    if path.is_dir() or arch == HF_ARCH:
        if arch not in (None, HF_ARCH):
            raise TargetError(f"{str(path)!r} is a directory (a Hugging Face save_pretrained folder); --arch {arch} "
                              f"applies to a file (omit --arch or pass --arch {HF_ARCH})")
        if not path.is_dir():
            raise TargetError(f"--arch {HF_ARCH}: {str(path)!r} is not a directory (a save_pretrained folder)")
        return _from_hugging_face(path, max_abs, notes)
    if not path.is_file():
        raise TargetError(f"target file {str(path)!r} does not exist")
    fmt = checkpoint.sniff(path)
    if arch is None:
        if fmt in ("torch", "safetensors"):
            raise TargetError(f"{str(path)!r} is a {fmt} checkpoint, not TorchScript: pass --arch mlp | lenet5 | "
                              f"module:pkg.mod:Class (or --arch full for a pickled module you trust)")
        return _from_torchscript(path, max_abs).eval()
    if arch == "full":
        try:
            model = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise TargetError(f"--arch full: cannot unpickle {str(path)!r} ({_first_line(exc)})") from exc
        if not isinstance(model, nn.Module):
            raise TargetError(f"--arch full: {str(path)!r} holds a {type(model).__name__}, not an nn.Module")
        _check_values(model.state_dict(), path, max_abs)
        return model.eval()
    if arch not in ("mlp", "lenet5") and not arch.startswith("module:"):
        raise TargetError(f"unknown --arch {arch!r}; expected mlp, lenet5, module:pkg.mod:NAME[(key=value, ...)], "
                          f"full, hf (a Hugging Face folder), or none for TorchScript")
    try:
        obj = checkpoint.read(path, notes)
    except checkpoint.CheckpointError as exc:
        raise TargetError(str(exc)) from exc
    if arch == "mlp":
        sd = _mlp_state(obj, path, notes, state_dict_key)
        _check_values(sd, path, max_abs)
        return _mlp_from_state(sd).eval()
    if arch == "lenet5":  # its layers' biases are optional: as the checkpoint has them
        keys = {k for _, sd in checkpoint.candidates(obj) for k in sd}
        biases = {k: any(key.endswith(f"{k}.bias") for key in keys) for k in LeNet5.LAYERS}
        return _fit_and_load(LeNet5(biases), obj, path, arch, notes, state_dict_key, max_abs).eval()
    return _fit_and_load(_module_arch(arch), obj, path, arch, notes, state_dict_key, max_abs).eval()


def input_shape_of(model: nn.Module, arch: str | None) -> tuple[int, ...]:
    """The input shape (without the batch dimension) a target implies: LeNet-5's, or an MLP's
    first width; refused for anything else (pass --input-shape)."""
    if arch == "lenet5":
        return (1, 28, 28)
    if arch == HF_ARCH:
        longest = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        raise TargetError("a Hugging Face model reads sequences of token ids; pass --input-shape T, the tokens per "
                          "sequence" + (f" (at most {longest})" if longest else ""))
    for mod in model.modules():
        if isinstance(mod, nn.Linear):
            return (mod.in_features,)
        if isinstance(mod, nn.Conv2d):
            break
    raise TargetError("cannot infer the input shape of this target; pass --input-shape C,H,W or --data")
