"""`lottery solve` / `lottery verify` end to end, and bad input at the command line."""

from __future__ import annotations

import gzip
import json
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from models.cli import main
from models.zoo import LeNet5

from .conftest import requires_gurobi
from .nets import tiny_cnn, tiny_mlp


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LOTTERY_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def test_embedded_default_matches_target_accuracy_and_verifies(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["solve", "--out", str(out), "--no-progress", "--export"]) == 0
    r = json.loads((out / "report.json").read_text())
    for key in ("target_params", "random_params", "kept_params", "max_weight_error", "accuracy", "agreement",
                "max_output_error", "certified_bound", "status_counts", "seconds", "backend", "n", "objective",
                "eps", "seed"):
        assert key in r
    assert abs(r["accuracy"]["target"] - r["accuracy"]["pruned"]) <= 0.005
    assert r["max_output_error"] <= r["certified_bound"]
    assert r["status_counts"]["optimal"] == r["target_params"]
    assert r["n"] == 21 and r["backend"] == "mitm"
    for name in ("report.md", "weight_errors.png", "ticket.pt", "pruned_state_dict.pt", "pruned.pt2"):
        assert (out / name).is_file()
    assert "| layer | kind |" in (out / "report.md").read_text()
    assert "report:" in capsys.readouterr().out
    assert main(["verify", str(out)]) == 0
    assert "bit-exact: True" in capsys.readouterr().out


def _save(tmp_path, model, name="target.pt"):
    path = tmp_path / name
    torch.save(model.state_dict(), path)
    return path


@pytest.mark.parametrize("backend", ["mitm", "cpsat", "auto", pytest.param("gurobi", marks=requires_gurobi)])
def test_each_backend_from_the_cli(tmp_path, backend):
    path = _save(tmp_path, tiny_mlp())
    out = tmp_path / backend
    args = ["solve", str(path), "--arch", "module:tests.nets:TinyMLP", "--n", "6", "--backend", backend,
            "--objective", "min-size", "--eps", "0.05", "--input-domain", "signed", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    r = json.loads((out / "report.json").read_text())
    assert r["backend"] == ("mitm" if backend == "auto" else backend)
    assert r["max_output_error"] <= r["certified_bound"]
    assert main(["verify", str(out)]) == 0


def test_refuses_a_different_run_unless_forced(tmp_path, capsys):
    path = _save(tmp_path, tiny_mlp())
    base = ["solve", str(path), "--arch", "module:tests.nets:TinyMLP", "--n", "4", "--out", str(tmp_path / "o"), "--no-progress"]
    assert main(base) == 0
    assert main(base) == 0  # same config: allowed
    assert main(base[:-1] + ["--seed", "3", "--no-progress"]) == 2
    assert "holds a different run" in capsys.readouterr().err
    assert main(base[:-1] + ["--seed", "3", "--force", "--no-progress"]) == 0
    assert json.loads((tmp_path / "o" / "report.json").read_text())["seed"] == 3
    assert not list(tmp_path.glob(".o.tmp-*"))  # nothing half-written left behind


def test_lenet5_with_mnist_idx_files(tmp_path):
    """A LeNet-5 state_dict and a torchvision-style MNIST root holding only the t10k files."""
    torch.manual_seed(0)
    path = _save(tmp_path, LeNet5(biases=False))
    raw = tmp_path / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 20, dtype=np.uint8)
    with gzip.open(raw / "t10k-images-idx3-ubyte.gz", "wb") as fh:
        fh.write(struct.pack(">BBBBIII", 0, 0, 8, 3, 20, 28, 28) + images.tobytes())
    (raw / "t10k-labels-idx1-ubyte").write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, 20) + labels.tobytes())
    out = tmp_path / "lenet"
    assert main(["solve", str(path), "--arch", "lenet5", "--n", "4", "--data", f"mnist:{tmp_path / 'mnist'}",
                 "--out", str(out), "--no-progress"]) == 0
    r = json.loads((out / "report.json").read_text())
    assert r["input_shape"] == [1, 28, 28] and r["input_domain"] == [0.0, 1.0]
    assert r["target_params"] == 6 * 25 + 16 * 6 * 25 + 400 * 120 + 120 * 84 + 84 * 10
    assert "accuracy" in r and r["max_output_error"] <= r["certified_bound"]
    assert main(["verify", str(out)]) == 0


def test_normalized_mnist_gives_a_signed_domain(tmp_path):
    torch.manual_seed(0)
    path = _save(tmp_path, torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 3)))
    root = tmp_path / "m"
    root.mkdir()
    (root / "t10k-images-idx3-ubyte").write_bytes(struct.pack(">BBBBIII", 0, 0, 8, 3, 4, 28, 28) + bytes(4 * 784))
    (root / "t10k-labels-idx1-ubyte").write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, 4) + bytes(4))
    out = tmp_path / "o"
    assert main(["solve", str(path), "--arch", "mlp", "--n", "3", "--data", f"mnist:{root}", "--normalize",
                 "0.1307,0.3081", "--out", str(out), "--no-progress"]) == 0
    r = json.loads((out / "report.json").read_text())
    assert r["input_domain"][0] < 0 and r["layers"][0]["input_nonneg"] is False
    assert main(["verify", str(out)]) == 0


@pytest.mark.parametrize("make_args, message", [
    (lambda p: ["solve", str(p.parent / "missing.pt"), "--arch", "mlp"], "does not exist"),
    (lambda p: ["solve", str(p), "--arch", "lenet5"], "does not fit --arch lenet5: missing keys"),
    (lambda p: ["solve", str(p), "--arch", "mlp", "--n", "0"], "argument --n: must be an int in the range [1, inf); got 0 instead"),
    (lambda p: ["solve", str(p), "--arch", "mlp", "--n", "2.5"], "argument --n: must be an int or 'auto'; got '2.5'"),
    (lambda p: ["solve", str(p), "--arch", "mlp", "--n", "auto"], "`n='auto'` needs --eps"),
    (lambda p: ["solve", str(p), "--arch", "mlp", "--n", "auto", "--eps", "0.1", "--n-max", "0"],
     "argument --n-max: must be an int in the range [1, inf); got 0"),
    (lambda p: ["solve", str(p), "--arch", "mlp", "--input-shape", "64.9"], "argument --input-shape: must be comma-separated ints"),
    (lambda p: ["solve", str(p), "--arch", "mlp", "--input-domain", "1,0"], "LO,HI needs LO <= HI; got '1,0'"),
    (lambda p: ["solve", str(p), "--arch", "mlp", "--time-limit", "0"], "argument --time-limit: must be a real number in the range (0.0, inf); got 0.0"),
    (lambda p: ["solve", str(p), "--arch", "mlp", "--data", "digits"], "do not fit the target"),
    (lambda p: ["solve", str(p), "--arch", "mlp", "--objective", "min-size"], "--eps is required for objective 'min-size'"),
    (lambda p: ["solve", str(p), "--arch", "mlp", "--backend", "fast"], "unknown backend 'fast'"),
    (lambda p: ["solve", str(p), "--arch", "mlp", "--n", "60", "--backend", "mitm"], "raise --table-memory, use fewer"),
    (lambda p: ["solve", str(p), "--arch", "mlp", "--memory-limit", "lots"], "argument --memory-limit: must be a byte count"),
    (lambda p: ["solve", str(p), "--arch", "nope"], "unknown --arch 'nope'"),
    (lambda p: ["solve", str(p)], "is a torch checkpoint, not TorchScript: pass --arch"),
])
def test_bad_input_is_reported_clearly(tmp_path, capsys, make_args, message):
    path = _save(tmp_path, tiny_mlp())
    assert main(make_args(path) + ["--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_mlp_arch_reports_mismatched_shapes(tmp_path, capsys):
    sd = {"a.weight": torch.zeros(4, 3), "b.weight": torch.zeros(2, 5)}
    torch.save(sd, tmp_path / "bad.pt")
    assert main(["solve", str(tmp_path / "bad.pt"), "--arch", "mlp", "--out", str(tmp_path / "o")]) == 2
    assert "'a.weight' has shape (4, 3) but 'b.weight' has shape (2, 5)" in capsys.readouterr().err


def test_nan_weights_refused(tmp_path, capsys):
    model = tiny_mlp()
    with torch.no_grad():
        model.fc2.weight[0, 0] = float("nan")
    path = _save(tmp_path, model)
    assert main(["solve", str(path), "--arch", "mlp", "--out", str(tmp_path / "o")]) == 2
    assert "parameter 'fc2.weight' holds NaN or inf" in capsys.readouterr().err


def test_safetensors_and_torchscript_targets(tmp_path):
    from safetensors.torch import save_file

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)).eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "t.safetensors"))
    assert main(["solve", str(tmp_path / "t.safetensors"), "--arch", "mlp", "--n", "4",
                 "--out", str(tmp_path / "a"), "--no-progress"]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated upstream; users still have such files
        torch.jit.script(model).save(str(tmp_path / "t.ts"))
    assert main(["solve", str(tmp_path / "t.ts"), "--n", "4", "--input-shape", "6",
                 "--out", str(tmp_path / "b"), "--no-progress"]) == 0
    a = json.loads((tmp_path / "a" / "report.json").read_text())
    b = json.loads((tmp_path / "b" / "report.json").read_text())
    assert a["max_output_error"] == b["max_output_error"]  # same weights, same seed
    assert main(["verify", str(tmp_path / "b")]) == 0


def test_cnn_target_via_module_arch(tmp_path):
    path = _save(tmp_path, tiny_cnn())
    out = tmp_path / "cnn"
    assert main(["solve", str(path), "--arch", "module:tests.nets:TinyCNN", "--n", "5", "--input-shape", "2,8,8",
                 "--variant", "dense", "--out", str(out), "--no-progress"]) == 0
    r = json.loads((out / "report.json").read_text())
    assert [l["folded_bn"] for l in r["layers"]] == ["bn1", None, None, None]
    assert main(["verify", str(out)]) == 0


@pytest.mark.parametrize("wrap, notes", [
    (lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "best_prec1": 91.2, "epoch": 3},
     ["state_dict taken from the checkpoint's 'state_dict' entry (left out: best_prec1, epoch)",
      "prefix 'module.' removed from every key"]),
    (lambda sd: {"model": {f"_orig_mod.module.{k}": v for k, v in sd.items()}, "optimizer": {"lr": 0.1}},
     ["state_dict taken from the checkpoint's 'model' entry (left out: optimizer)",
      "prefix '_orig_mod.module.' removed from every key"]),
    (lambda sd: sd, []),
])
def test_checkpoints_as_training_scripts_save_them(tmp_path, wrap, notes):
    from .nets import width_mlp

    target = width_mlp(width=7, classes=3)
    path = tmp_path / "ckpt.pth"
    torch.save(wrap(target.state_dict()), path)
    out = tmp_path / "o"
    assert main(["solve", str(path), "--arch", "module:tests.nets:width_mlp(width=7, classes=3)", "--n", "4",
                 "--input-shape", "5", "--out", str(out), "--no-progress"]) == 0
    r = json.loads((out / "report.json").read_text())
    read = "read with torch.load(weights_only=True) (zip format)"
    assert r["target"]["loaded"] == [read, *notes] and r["target_params"] == 5 * 7 + 7 + 7 * 3 + 3
    assert all(note in (out / "report.md").read_text() for note in notes)
    assert main(["verify", str(out)]) == 0


@pytest.mark.parametrize("arch, message", [
    ("module:tests.nets:width_mlp(7)", "only keyword arguments are accepted"),
    ("module:tests.nets:width_mlp(width=len)", "argument 'width' must be a literal"),
    ("module:tests.nets:width_mlp(width=7", "must be module:pkg.mod:NAME or module:pkg.mod:NAME(key=value, ...)"),
    ("module:tests.nets:width_mlp(depth=2)", "tests.nets.width_mlp(**{'depth': 2}) failed (TypeError"),
    ("module:tests.nets:not_a_module(a=1)", "returned a dict, not an nn.Module"),
    ("module:tests.nets:width_mlp(width=9)", "shape mismatches"),
])
def test_bad_module_arch_is_one_line(tmp_path, capsys, arch, message):
    from .nets import width_mlp

    path = tmp_path / "m.pt"
    torch.save(width_mlp(width=7).state_dict(), path)
    assert main(["solve", str(path), "--arch", arch, "--input-shape", "5", "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 2
    assert message in capsys.readouterr().err


def test_a_checkpoint_with_other_entries_and_no_state_dict_is_named(tmp_path, capsys):
    path = tmp_path / "m.pt"
    torch.save({"fc.weight": torch.zeros(2, 5), "epoch": 3}, path)
    assert main(["solve", str(path), "--arch", "mlp", "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "holds no state_dict (a dict of tensors) with 2-D '*weight' tensors for --arch mlp; it holds a dict with " \
           "entries 'fc.weight' (Tensor), 'epoch' (int)" in capsys.readouterr().err


def test_grouped_conv_target_solves_and_verifies_from_its_ticket(tmp_path):
    from .nets import grouped_cnn

    path = tmp_path / "g.pt"
    torch.save(grouped_cnn().state_dict(), path)
    out = tmp_path / "o"
    assert main(["solve", str(path), "--arch", "module:tests.nets:grouped_cnn(seed=1)", "--n", "4",
                 "--input-shape", "2,8,8", "--input-domain", "signed", "--out", str(out), "--no-progress"]) == 0
    r = json.loads((out / "report.json").read_text())
    assert r["bound_holds"] and r["layers"][2]["shape"] == [6, 1, 3, 3]
    assert main(["verify", str(out)]) == 0


@pytest.mark.parametrize("files, message", [
    ({}, "is a directory without config.json"),
    ({"config.json": "{}", "pytorch_model.bin": ""}, "holds pickled weights, pytorch_model.bin, which can run code"),
    ({"config.json": "{}", "model.safetensors.index.json": '{"weight_map": {"a": "../x.safetensors"}}'},
     "names shards that are not .safetensors files in the folder: ../x.safetensors"),
])
def test_a_folder_that_is_not_a_safe_save_pretrained_folder_is_refused(tmp_path, capsys, files, message):
    folder = tmp_path / "model"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    assert main(["solve", str(folder), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert message in capsys.readouterr().err
    assert main(["solve", str(folder), "--arch", "mlp", "--out", str(tmp_path / "o")]) == 2
    assert "is a directory (a Hugging Face save_pretrained folder); --arch mlp applies to a file" in capsys.readouterr().err


@pytest.mark.slow
def test_a_hugging_face_folder_solves_and_verifies_from_its_copy(tmp_path, capsys):
    """A save_pretrained folder as the target: traced with transformers' fx tracer (transformers < 5),
    the token domain by default, the folder copied into the run and checked by `lottery verify`."""
    pytest.importorskip("transformers.utils.fx", reason="transformers' fx tracer (transformers < 5) is not installed")
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(num_hidden_layers=1, hidden_size=16, num_attention_heads=2, intermediate_size=32,
                                     vocab_size=50, max_position_embeddings=16, num_labels=3)
    folder = tmp_path / "bert"
    transformers.BertForSequenceClassification(config).save_pretrained(folder)
    out = tmp_path / "o"
    assert main(["solve", str(folder), "--out", str(out), "--no-progress"]) == 2
    assert "pass --input-shape T, the tokens per sequence (at most 16)" in capsys.readouterr().err
    assert main(["solve", str(folder), "--input-shape", "6", "--n", "6", "--out", str(out), "--no-progress"]) == 0
    r = json.loads((out / "report.json").read_text())
    assert r["target"]["arch"] == "hf" and "BertForSequenceClassification" in r["target"]["loaded"][0]
    assert r["unconstructed_params"] == 0 and r["config"]["input_domain"] == [0, 49]
    assert sorted(p.name for p in (out / "target").iterdir()) == ["config.json", "model.safetensors"]
    assert main(["verify", str(out)]) == 0
    (out / "target" / "config.json").write_text((out / "target" / "config.json").read_text().replace("16", "17"))
    assert main(["verify", str(out)]) == 2
    err = capsys.readouterr().err
    assert "the target copy" in err and "was changed" in err
    config = json.loads((folder / "config.json").read_text())  # a class whose head the folder lacks
    (folder / "config.json").write_text(json.dumps(dict(config, architectures=["BertForMaskedLM"])))
    assert main(["solve", str(folder), "--input-shape", "6", "--out", str(tmp_path / "o2"), "--no-progress"]) == 2
    assert "does not fill BertForMaskedLM: weights missing or of another shape" in capsys.readouterr().err


def _width_mlp_file(tmp_path, width: int) -> Path:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.ReLU(), torch.nn.Linear(width, 10))
    path = tmp_path / "mlp.pt"
    torch.save(net.state_dict(), path)
    return path


@pytest.mark.parametrize("backend", ["mitm", "cpsat"])
def test_the_default_run_solves_on_every_core_it_is_given(tmp_path, monkeypatch, backend):
    """`lottery solve` without --workers uses every core the process may run on: mitm's numba kernel
    on that many threads, a process backend's pool of that many workers (not a timing test)."""
    import numba

    import solver.backends._mitm_numba as kernels
    import solver.execution as execution
    from solver.options import available_cores

    cores = available_cores()
    if cores < 2 or numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip(f"needs 2 cores to tell one from all; this process may run on {cores}")
    seen: list[tuple[str, int]] = []
    for name in ("mitm_batch", "mitm_serial"):
        kernel = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *a, _k=kernel, _n=name: (seen.append((_n, numba.get_num_threads())),
                                                                            _k(*a))[1])
    pool = execution._run_pool
    monkeypatch.setattr(execution, "_run_pool", lambda b, batch, options, *a: (seen.append(("pool", options.workers)),
                                                                              pool(b, batch, options, *a))[1])
    # 40-40-10 on a signed box: 3600 problems, one mitm chunk above the serial kernel's size
    args = ["solve", str(_width_mlp_file(tmp_path, 40)), "--arch", "mlp", "--input-domain", "signed",
            "--backend", backend, "--out", str(tmp_path / "run"), "--no-progress"]
    if backend == "cpsat":
        args += ["--n", "6", "--objective", "min-size", "--eps", "0.05"]
    assert main(args) == 0
    if backend == "mitm":
        assert ("mitm_batch", min(cores, numba.config.NUMBA_NUM_THREADS)) in seen, seen
    else:
        assert seen and all(entry == ("pool", cores) for entry in seen), seen
