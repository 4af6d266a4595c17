"""The tool never deletes what it did not write, and never takes a directory it did not make."""

from __future__ import annotations

import json

import pytest
import torch

from models.cli import main

from .nets import tiny_mlp


@pytest.fixture
def target(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(tiny_mlp().state_dict(), path)
    return path


def _solve(target, out, *extra):
    return main(["solve", str(target), "--arch", "module:tests.nets:TinyMLP", "--n", "3", "--out", str(out),
                 "--no-progress", *extra])


def test_force_never_deletes_a_directory_that_is_not_a_run(tmp_path, target, capsys):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "thesis.txt").write_text("four years")
    assert _solve(target, notes, "--force") == 2
    err = capsys.readouterr().err
    assert "is not empty and is not a lottery run directory (it holds thesis.txt)" in err
    assert "--force" not in err
    assert (notes / "thesis.txt").read_text() == "four years" and len(list(notes.iterdir())) == 1


def test_never_the_working_directory_nor_the_one_holding_the_target(tmp_path, target, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "src").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    assert _solve(target, ".", "--force") == 2
    assert "refusing to write the run into the working directory" in capsys.readouterr().err
    sub = tmp_path / "sub"
    sub.mkdir()
    inner = sub / "model.pt"
    inner.write_bytes(target.read_bytes())
    assert _solve(inner, sub, "--force") == 2
    assert "it holds the target" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before + ["sub"]) and inner.is_file()


def test_force_replaces_a_run_and_keeps_what_the_user_added(tmp_path, target):
    out = tmp_path / "run"
    assert _solve(target, out) == 0
    assert (out / ".lottery-run").is_file()
    (out / "my-notes.md").write_text("keep me")
    assert _solve(target, out, "--seed", "4") == 2  # another configuration: refused without --force
    assert _solve(target, out, "--seed", "4", "--force") == 0
    assert json.loads((out / "report.json").read_text())["seed"] == 4
    assert (out / "my-notes.md").read_text() == "keep me"


def test_an_empty_directory_is_used_and_marked(tmp_path, target):
    out = tmp_path / "empty"
    out.mkdir()
    assert _solve(target, out) == 0
    assert json.loads((out / ".lottery-run").read_text())["format"] == "lottery-run-directory"


def test_mlp_arch_refuses_a_checkpoint_it_would_only_partly_use(tmp_path, capsys):
    from .nets import tiny_cnn

    path = tmp_path / "cnn.pt"
    torch.save(tiny_cnn().state_dict(), path)
    assert main(["solve", str(path), "--arch", "mlp", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "--arch mlp uses only the Linear weights and biases, but the checkpoint also holds 10 other tensor(s): " \
           "conv1.weight, conv1.bias, bn1.weight" in err and "conv3.bias; describe the network with --arch module:" in err
    bn_mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.ReLU(),
                                 torch.nn.Linear(3, 2))
    torch.save(bn_mlp.state_dict(), path)
    assert main(["solve", str(path), "--arch", "mlp", "--out", str(tmp_path / "o")]) == 2
    assert "2.running_mean, 2.running_var, 2.num_batches_tracked" in capsys.readouterr().err


def test_absurd_or_damaged_weights_are_refused_naming_the_tensor(tmp_path, capsys):
    model = tiny_mlp()
    with torch.no_grad():
        model.fc2.weight[1, 2] = 4e13  # what a few flipped exponent bits do
    path = tmp_path / "m.pt"
    torch.save(model.state_dict(), path)
    args = ["solve", str(path), "--arch", "mlp", "--n", "3", "--input-domain", "signed", "--no-progress"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 2
    assert "parameter 'fc2.weight' holds |values| up to 4e+13, absurd for a trained network" in capsys.readouterr().err
    assert main(args + ["--out", str(tmp_path / "b"), "--allow-large-weights"]) == 0  # the user says it is meant
    raw = path.read_bytes()
    (tmp_path / "half.pt").write_bytes(raw[: len(raw) // 2])
    assert main(["solve", str(tmp_path / "half.pt"), "--arch", "mlp", "--out", str(tmp_path / "h")]) == 2
    assert "cannot load" in capsys.readouterr().err and not (tmp_path / "h").exists()
    (tmp_path / "empty.pt").write_bytes(b"")
    assert main(["solve", str(tmp_path / "empty.pt"), "--arch", "mlp", "--out", str(tmp_path / "c")]) == 2
    assert "cannot load" in capsys.readouterr().err


def test_a_negative_batchnorm_variance_is_named(tmp_path, capsys):
    from .nets import tiny_cnn

    model = tiny_cnn()
    with torch.no_grad():
        model.bn1.running_var[1] = -2.0
    path = tmp_path / "cnn.pt"
    torch.save(model.state_dict(), path)
    assert main(["solve", str(path), "--arch", "module:tests.nets:TinyCNN", "--input-shape", "2,8,8",
                 "--out", str(tmp_path / "o")]) == 2
    assert "BatchNorm 'bn1': running_var[1] = -2 makes var + eps <= 0" in capsys.readouterr().err
