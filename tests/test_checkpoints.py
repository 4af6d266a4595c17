"""Checkpoints as they are found in the wild: a corpus of layouts built here, each loaded exactly as
torch loads it, or refused with one line that says what was found and what to do."""

from __future__ import annotations

import argparse
import json
from collections import OrderedDict

import numpy as np
import pytest
import torch

from models.checkpoint import sniff
from models.cli import main
from models.target import TargetError, load_target

from . import nets

ARCH = "module:tests.nets:tiny_resnet"  # a BatchNorm (num_batches_tracked), a conv stem, a linear head


def _reference() -> dict[str, torch.Tensor]:
    model = nets.tiny_resnet(seed=3)
    with torch.no_grad():
        model.block.bn1.num_batches_tracked.fill_(7)
    return model.state_dict()


def _version_less(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """As torch < 0.4.1 saved it: no num_batches_tracked, no version metadata."""
    return {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}


def _same_weights(model: torch.nn.Module, sd: dict[str, torch.Tensor]) -> bool:
    own = model.state_dict()
    return all(torch.equal(own[k], v) for k, v in sd.items() if not k.endswith("num_batches_tracked"))


def _prefixed(sd, prefix):
    return OrderedDict((prefix + k, v) for k, v in sd.items())


LAYOUTS = {
    # an older torch's CIFAR ResNet: DataParallel keys, no num_batches_tracked, a numpy accuracy beside
    "version-less BatchNorm, DataParallel, .th": (
        "r.th", lambda sd: {"best_prec1": np.float64(91.2), "state_dict": _prefixed(_version_less(sd), "module.")},
        ["'state_dict' entry", "prefix 'module.' removed", "num_batches_tracked", "inert placeholders"]),
    "Lightning .ckpt (model. prefix, hyperparameters, a loss weight outside the model)": (
        "epoch=3.ckpt", lambda sd: {
            "epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.4.0",
            "state_dict": OrderedDict([*_prefixed(sd, "model.").items(), ("loss_fn.pos_weight", torch.ones(3))]),
            "optimizer_states": [{"state": {0: {"momentum_buffer": torch.zeros(3)}}, "param_groups": [{"lr": 0.1}]}],
            "lr_schedulers": [], "hparams_name": "kwargs",
            "hyper_parameters": {"lr": 0.1, "args": argparse.Namespace(width=3, depth=1)}},
        ["'state_dict' entry", "prefix 'model.' removed", "outside prefix 'model.' left out", "argparse.Namespace"]),
    "model and model_ema entries (EMA last)": (
        "ema.pth", lambda sd: {"model": sd, "model_ema": {k: v + 1 if v.is_floating_point() else v
                                                          for k, v in sd.items()}, "epoch": 9},
        ["'model' entry", "model_ema also fit"]),
    "DataParallel over torch.compile, .tar": (
        "ck.tar", lambda sd: _prefixed(sd, "module._orig_mod."), ["prefix 'module._orig_mod.' removed"]),
    "model. and ema_model. in one state_dict, .bin": (
        "pytorch_model.bin", lambda sd: {"state_dict": OrderedDict([*_prefixed(sd, "ema_model.").items(),
                                                                     *_prefixed(sd, "model.").items()])},
        ["prefix 'model.' removed", "state_dict/ema_model. also fit"]),
    "a backbone. prefix, plain .pt": ("b.pt", lambda sd: _prefixed(sd, "backbone."), ["prefix 'backbone.' removed"]),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_each_layout_loads_as_torch_loads_it(tmp_path, layout):
    name, make, said = LAYOUTS[layout]
    sd = _reference()
    torch.save(make(sd), tmp_path / name)
    notes: list[str] = []
    model = load_target(tmp_path / name, ARCH, notes=notes)
    assert _same_weights(model, sd), "the weights loaded are not the reference's"
    text = "; ".join(notes)
    for words in said:
        assert words in text, (words, notes)


def test_an_old_state_dict_without_num_batches_tracked_loads_like_load_state_dict(tmp_path):
    """torch's own strict load accepts it (BatchNorm fills the buffer when the file has no version
    metadata); so does the tool, and the buffer is torch's value."""
    sd = _version_less(_reference())
    reference = nets.tiny_resnet()
    reference.load_state_dict(sd, strict=True)  # what torch accepts
    torch.save(sd, tmp_path / "old.pt")
    model = load_target(tmp_path / "old.pt", ARCH)
    assert int(model.block.bn1.num_batches_tracked) == int(reference.block.bn1.num_batches_tracked)
    assert _same_weights(model, sd)


def test_the_state_dict_key_chooses_among_those_that_fit(tmp_path):
    sd = _reference()
    name, make, _ = LAYOUTS["model and model_ema entries (EMA last)"]
    torch.save(make(sd), tmp_path / name)
    ema = load_target(tmp_path / name, ARCH, state_dict_key="model_ema")
    assert torch.equal(ema.fc.weight, sd["fc.weight"] + 1)
    name, make, _ = LAYOUTS["model. and ema_model. in one state_dict, .bin"]
    torch.save(make(sd), tmp_path / name)
    notes: list[str] = []
    load_target(tmp_path / name, ARCH, notes=notes, state_dict_key="state_dict/ema_model.")
    assert "prefix 'ema_model.' removed" in "; ".join(notes)
    with pytest.raises(TargetError, match="names no state_dict .* its state_dicts: model, model_ema"):
        load_target(tmp_path / "ema.pth", ARCH, state_dict_key="nope")


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".th", ".tar", ".ckpt", ".bin", ".safetensors", ""])
def test_the_format_is_told_by_content_not_extension(tmp_path, suffix):
    from safetensors.torch import save_file

    sd = _reference()
    torch.save(sd, tmp_path / f"a{suffix}")
    assert sniff(tmp_path / f"a{suffix}") == "torch"
    assert _same_weights(load_target(tmp_path / f"a{suffix}", ARCH), sd)
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / f"s{suffix}", metadata={"format": "pt"})
    assert sniff(tmp_path / f"s{suffix}") == "safetensors"
    notes: list[str] = []
    assert _same_weights(load_target(tmp_path / f"s{suffix}", ARCH, notes=notes), sd)
    assert "safetensors (metadata format=pt)" in "; ".join(notes)


def test_a_full_pickled_module_is_refused_without_the_flag_and_runs_nothing(tmp_path, capsys):
    model = nets.tiny_resnet()
    torch.save(model, tmp_path / "whole.pt")
    with pytest.raises(TargetError, match=r"holds a pickled object \(.*tests\.nets\.TinyResNet.*pass --arch full only if"):
        load_target(tmp_path / "whole.pt", ARCH)
    torch.save({"model": model, "epoch": 1}, tmp_path / "inside.pt")
    with pytest.raises(TargetError, match=r"holds no state_dict .* 'model' \(a pickled object\)"):
        load_target(tmp_path / "inside.pt", ARCH)
    assert isinstance(load_target(tmp_path / "whole.pt", "full"), nets.TinyResNet)  # the user trusts it
    code = main(["solve", str(tmp_path / "whole.pt"), "--arch", ARCH, "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--arch full" in err


def test_a_checkpoint_that_does_not_fit_says_what_it_lacks(tmp_path):
    sd = _reference()
    del sd["fc.bias"]
    sd["fc.weight"] = torch.zeros(2, 12)
    torch.save({"state_dict": _prefixed(sd, "model.")}, tmp_path / "bad.ckpt")
    with pytest.raises(TargetError) as err:
        load_target(tmp_path / "bad.ckpt", ARCH)
    text = str(err.value)
    assert "does not fit --arch module:tests.nets:tiny_resnet" in text and "missing keys fc.bias" in text
    assert "model.fc.weight: file (2, 12) vs arch (3, 12)" in text and "state_dict/model." in text


def test_a_lightning_checkpoint_builds_and_its_rerun_verifies(tmp_path, capsys):
    """End to end: the run records the steps in its report, and `lottery verify` rebuilds the ticket
    from the checkpoint by the same choice (here an explicit --state-dict-key)."""
    sd = _reference()
    name, make, _ = LAYOUTS["Lightning .ckpt (model. prefix, hyperparameters, a loss weight outside the model)"]
    torch.save(make(sd), tmp_path / name)
    out = tmp_path / "run"
    assert main(["solve", str(tmp_path / name), "--arch", ARCH, "--input-shape", "2,8,8", "--n", "4",
                 "--state-dict-key", "state_dict/model.", "--out", str(out), "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["target"]["state_dict_key"] == "state_dict/model."
    assert any("prefix 'model.' removed" in n for n in report["target"]["loaded"])
    assert "Target loaded:" in (out / "report.md").read_text()
    capsys.readouterr()
    assert main(["verify", str(out)]) == 0


class _Payload:
    """An object whose unpickling would create a file: what a malicious checkpoint carries."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_objects_beside_the_tensors_are_read_inert_and_run_no_code(tmp_path):
    sd = _reference()
    marker = tmp_path / "code-ran"
    torch.save({"state_dict": sd, "callback": _Payload(str(marker))}, tmp_path / "ck.pt")
    notes: list[str] = []
    model = load_target(tmp_path / "ck.pt", ARCH, notes=notes)
    assert _same_weights(model, sd) and not marker.exists()
    assert "io.open" in "; ".join(notes)
