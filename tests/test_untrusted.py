"""Run directories, tickets, reports, chunk files and targets are untrusted input: a damaged or
tampered directory gives a one-line error (never a traceback, never unpickled code), and nothing
outside the run directory is touched."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from models.cli import main
from solver.files import sha256_file

from .nets import tiny_mlp


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("clean")
    target = root / "model.pt"
    torch.save(tiny_mlp().state_dict(), target)
    out = root / "run"
    args = ["solve", str(target), "--arch", "mlp", "--n", "3", "--objective", "min-size", "--eps", "0.05",
            "--backend", "cpsat", "--no-presolve", "--workers", "1", "--chunk-size", "4", "--input-domain", "signed",
            "--out", str(out), "--no-progress"]
    assert main(args) == 0
    return out, args


def _copy(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


def _verify(run: Path, capsys, *extra) -> tuple[int, str, str]:
    code = main(["verify", str(run), *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


def _resave_ticket(run: Path, change) -> None:
    """Tamper with the ticket the way an attacker would: edit it and fix every recorded checksum."""
    ticket = torch.load(run / "ticket.pt", weights_only=True)
    change(ticket)
    torch.save(ticket, run / "ticket.pt")
    report = json.loads((run / "report.json").read_text())
    report["ticket_sha256"] = sha256_file(run / "ticket.pt")
    (run / "report.json").write_text(json.dumps(report))


def test_clean_run_verifies(clean_run, capsys):
    code, out, _ = _verify(clean_run[0], capsys)
    assert code == 0 and "verify: OK" in out


def test_a_pickled_target_is_never_unpickled_without_consent(clean_run, tmp_path, capsys):
    run = _copy(clean_run[0], tmp_path)
    canary = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {canary}",))

    (run / "target.pt").write_bytes(pickle.dumps(Payload()))
    sha = sha256_file(run / "target.pt")

    def as_full(ticket):
        ticket["target"].update(arch="full", sha256=sha)

    _resave_ticket(run, as_full)
    code, _, err = _verify(run, capsys)
    assert code == 2 and "pass --trust-pickled-target only if you trust this directory" in err
    assert not canary.exists()


def test_a_changed_target_or_ticket_is_named(clean_run, tmp_path, capsys):
    run = _copy(clean_run[0], tmp_path)
    raw = bytearray((run / "target.pt").read_bytes())
    raw[-30] ^= 1
    (run / "target.pt").write_bytes(bytes(raw))
    code, _, err = _verify(run, capsys)
    assert code == 2 and "target.pt' was changed: its SHA-256 is" in err
    run2 = _copy(clean_run[0], tmp_path / "b")
    raw = bytearray((run2 / "ticket.pt").read_bytes())
    raw[100] ^= 0xFF
    (run2 / "ticket.pt").write_bytes(bytes(raw))
    code, _, err = _verify(run2, capsys)
    assert code == 2 and "ticket.pt' was changed or damaged" in err


@pytest.mark.parametrize("change, message", [
    (lambda t: t.update(format="lottery-tickex"), "format must be 'lottery-ticket'"),
    (lambda t: t.update(version=2), "this ticket is version 2: its random network was drawn from one stream"),
    (lambda t: t.update(version=4), "version must be 3; got 4"),
    (lambda t: t["target"].update(file="../../etc/passwd"), "target.file must name the run directory's target copy"),
    (lambda t: t["layers"][1].update(d_in=600), "masks[1].u must have shape [600, 3]"),
    (lambda t: t["layers"][0].update(seed=-3), "layers[0].seed has an invalid value -3"),
    (lambda t: t["layers"][0].update(scale=float("nan")), "layers[0].scale has an invalid value nan"),
    (lambda t: t["masks"][2]["B"].update(bits=torch.zeros(3, dtype=torch.uint8)), "masks[2].B bits do not match"),
    (lambda t: t["layers"][2].update(stride=[2, 2]), "layers[2].stride is (2, 2) but the target's layer '5' has (1, 1)"),
    (lambda t: t.update(input_shape=[5.5]), "input_shape must be a list of 1 to 4 positive ints"),
    (lambda t: t["check"].update(inputs=torch.zeros(4, 7)), "check.inputs must be float inputs of shape (k, 5)"),
])
def test_each_tampered_field_is_named(clean_run, tmp_path, capsys, change, message):
    run = _copy(clean_run[0], tmp_path)
    _resave_ticket(run, change)
    code, _, err = _verify(run, capsys)
    assert code == 2 and message in err, err


def _snapshot(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
            if p.is_file() and skip not in p.parents}


def _corrupt(path: Path, rng: np.random.Generator) -> str:
    raw = bytearray(path.read_bytes())
    how = rng.choice(["flip", "truncate", "empty"], p=[0.7, 0.2, 0.1])
    if how == "flip" and raw:
        for i in rng.integers(0, len(raw), int(rng.integers(1, 9))):
            raw[i] ^= int(rng.integers(1, 256))
    elif how == "truncate":
        raw = raw[: int(rng.integers(0, max(len(raw), 1)))]
    else:
        raw = bytearray()
    path.write_bytes(bytes(raw))
    return f"{how} {path.name}"


@pytest.mark.slow
def test_fuzz_damaged_run_directories(clean_run, tmp_path, capsys):
    """Seeded: 240 damaged copies of a run. verify: an error exit or the clean run's exact output;
    solve --resume after a damaged chunk: an error exit or masks identical to the clean run's; never a
    traceback; nothing outside the copy touched."""
    clean, solve_args = clean_run
    code, clean_out, _ = _verify(clean, capsys)
    assert code == 0
    clean_masks = torch.load(clean / "ticket.pt", weights_only=True)["masks"]
    rng = np.random.default_rng(2026)
    files = [p.relative_to(clean) for p in sorted(clean.rglob("*")) if p.is_file()]
    before = _snapshot(tmp_path.parent, tmp_path)
    outcomes = {"error": 0, "identical": 0}  # "identical": damage in a file the command does not need
    for case in range(240):
        run = tmp_path / f"c{case}"
        shutil.copytree(clean, run)
        chunked = case % 4 == 3
        pool = [f for f in files if f.parts[0] == "chunks"] if chunked else files
        what = _corrupt(run / pool[int(rng.integers(len(pool)))], rng)
        if chunked:  # a damaged job store: resume must recompute or refuse, never return other masks
            args = [a if a != str(clean) else str(run) for a in solve_args] + ["--resume"]
            code = main(args)
            capsys.readouterr()
            if code == 0:
                masks = torch.load(run / "ticket.pt", weights_only=True)["masks"]
                assert all(torch.equal(a[k]["bits"], b[k]["bits"]) for a, b in zip(masks, clean_masks) for k in a), what
        else:
            code, out, err = _verify(run, capsys)
            assert code in (0, 1, 2), what
            if code == 0:
                assert out.replace(str(run), str(clean)) == clean_out, what
            else:
                assert err.count("\n") <= 1 and "Traceback" not in err, (what, err)
        if not chunked and what.split()[-1] in ("ticket.pt", "target.pt"):
            assert code != 0, what  # both are checksummed: any damage is caught
        outcomes["identical" if code == 0 else "error"] += 1
        shutil.rmtree(run)
    assert _snapshot(tmp_path.parent, tmp_path) == before
    assert outcomes["error"] >= 30 and outcomes["identical"] >= 30  # both paths exercised


def test_a_target_class_that_cannot_be_imported_is_one_line(clean_run, tmp_path, capsys):
    run = _copy(clean_run[0], tmp_path)
    _resave_ticket(run, lambda t: t["target"].update(arch="module:not_installed.nets:Net"))
    code, _, err = _verify(run, capsys)
    assert code == 2 and "cannot import 'Net' from 'not_installed.nets'" in err and "on PYTHONPATH" in err


def test_claims_help_documents_every_option(capsys):
    assert main(["claims", "--help"]) == 0
    text = capsys.readouterr().out
    assert "seed of the random coefficient sets" in text and "directory for NAME.json" in text
