"""Durable, resumable, fault-tolerant runs: chunk store, SIGKILL and resume, corrupted chunks,
dead workers, Dask executor."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import pytest
import torch

import solver
from solver.execution import ExecutorError, close_clients
from solver.store import ChunkStore, StoreConfigError

from .faults import KillsOneWorker
from .nets import tiny_mlp
from .problems import random_instances


def _batch(seed=0, count=300, m=10):
    rng = np.random.default_rng(seed)
    t, c, _ = random_instances(rng, count, m, m)
    return t, c


def test_store_reuses_chunks_and_recomputes_corrupted_ones(tmp_path):
    t, c = _batch()
    ref = solver.solve(t, c, "min-size", eps=0.01, backend="cpsat", presolve=False)
    store = ChunkStore(tmp_path / "s", {"run": 1})
    first = solver.solve(t, c, "min-size", eps=0.01, backend="cpsat", presolve=False, chunk_size=40, store=store)
    assert np.array_equal(first.masks, ref.masks)
    files = sorted((tmp_path / "s").glob("chunks-*.npz"))
    assert len(files) == 8
    files[3].write_bytes(files[3].read_bytes()[:50])  # truncated
    raw = bytearray(files[5].read_bytes())
    raw[-20] ^= 0xFF  # corrupted
    files[5].write_bytes(bytes(raw))
    store = ChunkStore(tmp_path / "s", {"run": 1})
    again = solver.solve(t, c, "min-size", eps=0.01, backend="cpsat", presolve=False, chunk_size=40, store=store)
    assert sorted(store.recomputed) == ["chunks-000003", "chunks-000005"]
    assert np.array_equal(again.masks, ref.masks) and np.array_equal(again.status, ref.status)


def test_store_refuses_another_configuration(tmp_path):
    ChunkStore(tmp_path / "s", {"n": 21})
    with pytest.raises(StoreConfigError, match="made for another configuration"):
        ChunkStore(tmp_path / "s", {"n": 22})


def test_store_is_used_instead_of_solving(tmp_path, monkeypatch):
    t, c = _batch(count=100)
    store = ChunkStore(tmp_path / "s", {})
    first = solver.solve(t, c, backend="brute", chunk_size=25, store=store)
    from solver.backends.brute import BruteBackend

    def boom(*args, **kwargs):
        raise AssertionError("a stored chunk was solved again")

    monkeypatch.setattr(BruteBackend, "solve_chunk", boom)
    res = solver.solve(t, c, backend="brute", chunk_size=25, store=ChunkStore(tmp_path / "s", {}))
    for field in ("masks", "status", "error_bound", "size_bound", "fallback", "tolerance", "errors"):
        assert np.array_equal(getattr(res, field), getattr(first, field), equal_nan=field != "masks"), field


@pytest.mark.slow
def test_local_pool_survives_a_killed_worker(tmp_path):
    t, c = _batch(count=200)
    ref = solver.solve(t, c, "min-size", eps=0.01, backend="cpsat", presolve=False)
    res = solver.solve(t, c, "min-size", eps=0.01, backend=KillsOneWorker(tmp_path / "killed"), presolve=False,
                       workers=2, chunk_size=20)
    assert (tmp_path / "killed").exists()  # a worker really died
    assert np.array_equal(res.masks, ref.masks)


class _BreaksOnSubmit:
    """A pool whose worker dies while chunks are in flight: the in-flight futures fail and the
    next submit is refused, as a real broken pool does."""

    def __init__(self, after: int):
        self.after, self.futures = after, []

    def submit(self, fn, *args):
        if len(self.futures) == self.after:
            for fut in self.futures:
                fut.set_exception(BrokenProcessPool("a worker died"))
            raise BrokenProcessPool("the pool is not usable anymore")
        self.futures.append(Future())
        return self.futures[-1]


def test_chunks_in_flight_or_refused_by_a_broken_pool_are_resubmitted(monkeypatch):
    t, c = _batch(count=120)
    ref = solver.solve(t, c, backend="brute", presolve=False)
    pools = iter([_BreaksOnSubmit(after=2), ThreadPoolExecutor(2)])
    monkeypatch.setattr("loky.get_reusable_executor", lambda **kwargs: next(pools))
    res = solver.solve(t, c, backend="brute", presolve=False, workers=2, chunk_size=10)
    assert np.array_equal(res.masks, ref.masks) and np.array_equal(res.errors, ref.errors)


_LONG_SOLVE = """
import numpy as np, solver
if __name__ == "__main__":
    rng = np.random.default_rng(0)
    c = rng.uniform(-1, 1, (200000, 21)) * rng.uniform(0, 1, (200000, 21))
    solver.solve(rng.normal(0, 0.1, 200000), c, "min-size", eps=0.01, backend="cpsat", presolve=False,
                 workers=2, chunk_size=200, progress=False)
"""


@pytest.mark.slow
def test_workers_exit_when_the_main_process_is_sigkilled(tmp_path):
    psutil = pytest.importorskip("psutil")
    script = tmp_path / "long.py"
    script.write_text(_LONG_SOLVE)
    proc = subprocess.Popen([sys.executable, str(script)], start_new_session=True)
    try:
        main = psutil.Process(proc.pid)
        deadline = time.monotonic() + 120
        workers = []
        while time.monotonic() < deadline and len(workers) < 2:
            workers = [p for p in main.children() if "loky" in " ".join(p.cmdline()) and "process-name" in " ".join(p.cmdline())]
            time.sleep(0.2)
        assert len(workers) == 2, "the solve never started its worker processes"
        os.kill(proc.pid, signal.SIGKILL)  # the main process only: its pool cannot shut down
        proc.wait()
        gone, alive = psutil.wait_procs(workers, timeout=20)
        assert not alive, f"orphaned workers still running: {[p.pid for p in alive]}"
    finally:
        with contextlib.suppress(ProcessLookupError):  # whatever is left of its process group
            os.killpg(proc.pid, signal.SIGKILL)


def _solve_cmd(target, out, extra=()):
    return [sys.executable, "-m", "models.cli", "solve", str(target), "--arch", "module:tests.nets:TinyMLP",
            "--n", "8", "--objective", "min-size", "--eps", "0.02", "--backend", "cpsat", "--no-presolve",
            "--workers", "2", "--chunk-size", "4", "--input-domain", "signed", "--out", str(out), "--no-progress", *extra]


def _masks(run_dir):
    ticket = torch.load(run_dir / "ticket.pt", weights_only=True)
    return [{k: v["bits"] for k, v in m.items()} for m in ticket["masks"]], ticket["check"]["outputs"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0])
def test_sigkill_then_resume_is_bit_identical(tmp_path, seed):
    target = tmp_path / "t.pt"
    torch.save(tiny_mlp().state_dict(), target)
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    clean = tmp_path / "clean"
    subprocess.run(_solve_cmd(target, clean), check=True, env=env, capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_solve_cmd(target, killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    want = int(np.random.default_rng(seed).integers(2, 12))  # kill after a (seeded) random number of stored chunks
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list((killed / "chunks").glob("*.sha256"))) >= want:
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "report.json").exists()
    stored = len(list((killed / "chunks").glob("*.sha256")))
    assert stored >= 1
    res = subprocess.run(_solve_cmd(target, killed, ["--resume"]), env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    a_masks, a_out = _masks(clean)
    b_masks, b_out = _masks(killed)
    assert torch.equal(a_out, b_out)
    for a, b in zip(a_masks, b_masks):
        for key in a:
            assert torch.equal(a[key], b[key])
    ra = json.loads((clean / "report.json").read_text())
    rb = json.loads((killed / "report.json").read_text())
    assert ra["max_weight_error"] == rb["max_weight_error"] and ra["kept_params"] == rb["kept_params"]


def test_resume_refuses_a_different_configuration(tmp_path, capsys):
    from models.cli import main

    target = tmp_path / "t.pt"
    torch.save(tiny_mlp().state_dict(), target)
    args = ["solve", str(target), "--arch", "module:tests.nets:TinyMLP", "--n", "4", "--out", str(tmp_path / "o"),
            "--no-progress"]
    assert main(args) == 0
    assert main(args + ["--resume", "--workers", "1"]) == 0  # workers do not change the result
    assert main(args[:4] + ["--n", "5"] + args[6:] + ["--resume"]) == 2
    assert "holds a different run" in capsys.readouterr().err
    assert main(["solve", str(target), "--arch", "mlp", "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "holds no interrupted or finished run to resume" in capsys.readouterr().err


def test_unreachable_scheduler_fails_fast():
    pytest.importorskip("distributed")
    start = time.monotonic()
    with pytest.raises(ExecutorError, match=r"cannot reach the Dask scheduler at 'tcp://127.0.0.1:1'"):
        solver.solve(*_batch(count=10), backend="brute", executor="dask", scheduler="tcp://127.0.0.1:1")
    assert time.monotonic() - start < 30


@pytest.mark.slow
def test_dask_local_cluster_equals_local_run(tmp_path):
    distributed = pytest.importorskip("distributed")
    t, c = _batch(count=120)
    ref = solver.solve(t, c, "min-size", eps=0.01, backend="cpsat", presolve=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        res = solver.solve(t, c, "min-size", eps=0.01, backend="cpsat", presolve=False, chunk_size=15,
                           executor="dask", scheduler=cluster.scheduler_address)
        store = ChunkStore(tmp_path / "s", {})
        stored = solver.solve(t, c, backend="mitm", chunk_size=30, executor="dask",
                              scheduler=cluster.scheduler_address, store=store)
        close_clients()
    assert np.array_equal(res.masks, ref.masks) and np.array_equal(res.status, ref.status)
    assert np.array_equal(stored.masks, solver.solve(t, c, backend="mitm").masks)
    assert len(store.done()) == 4


@pytest.mark.slow
def test_dask_run_survives_a_killed_worker(tmp_path):
    distributed = pytest.importorskip("distributed")
    t, c = _batch(count=120)
    ref = solver.solve(t, c, "min-size", eps=0.01, backend="cpsat", presolve=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        res = solver.solve(t, c, "min-size", eps=0.01, backend=KillsOneWorker(tmp_path / "killed"), presolve=False,
                           chunk_size=15, executor="dask", scheduler=cluster.scheduler_address)
        close_clients()
    assert (tmp_path / "killed").exists()  # a dask worker process really died mid-run
    assert np.array_equal(res.masks, ref.masks)


def test_a_checksummed_file_that_is_not_a_chunk_is_solved_again(tmp_path):
    """An attacker (or a bug) can fix the checksum; the content must still be a well-formed chunk."""
    import hashlib
    import io

    t, c = _batch(count=40)
    ref = solver.solve(t, c, backend="brute", chunk_size=20)
    store = ChunkStore(tmp_path / "s", {})
    solver.solve(t, c, backend="brute", chunk_size=20, store=store)
    path = tmp_path / "s" / "chunks-000001.npz"
    with np.load(path) as npz:
        fields = {k: npz[k] for k in npz.files}
    fields["status"] = np.full_like(fields["status"], 7)  # no such status
    buf = io.BytesIO()
    np.savez(buf, **fields)
    path.write_bytes(buf.getvalue())
    (tmp_path / "s" / "chunks-000001.sha256").write_text(hashlib.sha256(buf.getvalue()).hexdigest())
    store = ChunkStore(tmp_path / "s", {})
    again = solver.solve(t, c, backend="brute", chunk_size=20, store=store)
    assert store.recomputed == ["chunks-000001"]
    assert np.array_equal(again.masks, ref.masks) and np.array_equal(again.status, ref.status)


def test_n_auto_search_resumes_from_the_store(tmp_path, monkeypatch):
    """--n auto's search keeps its solved chunks in the run's store as the final solve does: a rerun
    of the same construction reads every chunk back (the backend solves nothing) and gives the same
    n per layer and the same masks."""
    from models.construct import ConstructOptions, construct
    from models.masks import as_tensor
    from solver.backends.mitm import MitmBackend

    net = tiny_mlp()
    options = ConstructOptions.from_kwargs(n="auto", n_min=3, n_max=12, eps=0.02, backend="mitm", workers=1,
                                           progress=False, chunk_size=40)
    first = construct(net, (5,), (0.0, 1.0), options, store=ChunkStore(tmp_path / "s", {}))
    assert any(len(s.n_search["steps"]) > 1 for s in first.solutions)  # the search took several steps

    def boom(*args, **kwargs):
        raise AssertionError("a stored chunk was solved again")

    monkeypatch.setattr(MitmBackend, "solve_chunk", boom)
    again = construct(net, (5,), (0.0, 1.0), options, store=ChunkStore(tmp_path / "s", {}))
    assert [s.n for s in again.specs] == [s.n for s in first.specs]
    for a, b in zip(first.solutions, again.solutions):
        assert a.n_search["steps"] == b.n_search["steps"]
        assert all(torch.equal(as_tensor(a.masks[k]), as_tensor(b.masks[k])) for k in a.masks)
