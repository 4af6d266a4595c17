"""Chunked execution: the batch is cut into chunks, each solved by a pure function.

Chunks are independent and every backend is deterministic per problem, so the assembled
result does not depend on the chunk size, the number of workers or the executor:

* ``local`` (default): process-parallel backends (CP-SAT, Gurobi, brute) run chunks in a pool of
  worker processes (loky, reused across solves), restarted (and the lost chunks resubmitted) if a
  worker dies; workers exit by themselves if the main process is killed; backends that
  parallelise themselves (mitm: numba threads or a GPU) run chunks one after another here;
* ``dask``: chunks are tasks on a dask.distributed cluster (``scheduler`` address), retried by
  the scheduler when a worker dies.

With a :class:`~solver.store.ChunkStore`, finished chunks are read back instead of solved, and
each newly solved chunk is written atomically as soon as it arrives, so a killed run resumes
where it stopped.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from .backends.base import Backend
from .errors import SolverError
from .options import SolveOptions
from .problem import ProblemBatch
from .result import ChunkSolution

MAX_POOL_RESTARTS = 3
DASK_CONNECT_TIMEOUT = 10.0
#: seconds an idle local worker process is kept for the next solve before it exits
POOL_IDLE_TIMEOUT = 60
#: how often a local worker checks that the submitting process is still alive
ORPHAN_POLL_S = 0.5


class ExecutorError(SolverError, RuntimeError):
    """The execution backend failed (unreachable scheduler, workers dying again and again)."""


def solve_chunk(backend: Backend, batch: ProblemBatch, options: SolveOptions) -> ChunkSolution:
    """The unit of parallel work: a pure function of (backend, problems, options). The backend
    object itself travels to the worker (it holds no state), so any Backend runs remotely."""
    return backend.solve_chunk(batch, options)


def _progress_bar(total: int, n_chunks: int, progress: bool | None, desc: str):
    from tqdm.auto import tqdm

    if progress is None:
        disable = None if n_chunks > 1 else True  # None: tqdm shows it only on a terminal
    else:
        disable = not progress
    return tqdm(total=total, unit="problem", desc=desc, disable=disable, file=sys.stderr, leave=False)


def run_chunks(backend: Backend, batch: ProblemBatch, options: SolveOptions, store=None,
               store_key: str = "chunks") -> ChunkSolution:
    """Solve ``batch`` chunk by chunk with ``backend``; returns the assembled solution."""
    size = options.chunk_size or backend.default_chunk_size
    slices = [slice(i, min(i + size, batch.size)) for i in range(0, batch.size, size)]
    out = ChunkSolution.empty(batch.size, batch.width)

    todo: list[tuple[str, slice]] = []
    for index, sl in enumerate(slices):
        key = f"{store_key}-{index:06d}"
        stored = store.load(key) if store is not None else None
        if stored is not None and stored.masks.shape == (sl.stop - sl.start, batch.width):
            out.put(sl, stored)
        else:
            todo.append((key, sl))

    def finished(key: str, sl: slice, part: ChunkSolution) -> None:
        if store is not None:
            store.save(key, part)
        out.put(sl, part)
        bar.update(sl.stop - sl.start)

    with _progress_bar(sum(sl.stop - sl.start for _, sl in todo), len(todo), options.progress, backend.name) as bar:
        if options.executor == "dask":
            _run_dask(backend, batch, options, todo, finished)
        elif backend.parallelism == "process" and options.workers > 1 and len(todo) > 1:
            _run_pool(backend, batch, options, todo, finished)
        else:
            for key, sl in todo:
                finished(key, sl, backend.solve_chunk(batch.take(sl), options))
    return out


def _exit_when_orphaned(parent: int) -> None:
    """Worker initializer: exit as soon as the submitting process ``parent`` is gone, even when it
    was SIGKILLed (or OOM-killed) and could not shut its pool down, instead of idling as an
    orphan. ``parent`` is passed in, not read here: it may already be dead when this runs."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(ORPHAN_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="lottery-orphan-watch", daemon=True).start()


def _run_pool(backend, batch, options, todo, finished) -> None:
    """A local pool of worker processes (loky: a dead worker is detected and the remaining
    workers are killed rather than waited on, which the standard library's pool can deadlock on).
    A dead worker breaks the pool; a fresh one is started and the lost chunks are resubmitted,
    at most MAX_POOL_RESTARTS times."""
    from loky import get_reusable_executor

    worker_options = options.with_(workers=1, progress=False)
    queue = list(reversed(todo))
    restarts = 0
    while queue:
        pending: dict[Future, tuple[str, slice]] = {}
        pool = get_reusable_executor(max_workers=options.workers, timeout=POOL_IDLE_TIMEOUT,
                                      initializer=_exit_when_orphaned, initargs=(os.getpid(),))
        try:
            # at most 2 chunks per worker in flight: memory stays bounded by the chunk size
            while queue or pending:
                while queue and len(pending) < 2 * options.workers:
                    key, sl = queue[-1]
                    fut = pool.submit(solve_chunk, backend, batch.take(sl), worker_options)
                    pending[fut] = queue.pop()  # popped only once submitted: a refused chunk stays queued
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    part = fut.result()  # raises BrokenProcessPool if a worker died
                    key, sl = pending.pop(fut)
                    finished(key, sl, part)
        except BrokenProcessPool as exc:
            restarts += 1
            if restarts > MAX_POOL_RESTARTS:
                raise ExecutorError(f"worker processes died {restarts} times; last: {exc}") from exc
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            print(f"a worker process died ({reason}); restarting the pool and resubmitting "
                  f"{len(pending)} chunk(s)", file=sys.stderr)
            queue.extend(reversed(list(pending.values())))


_CLIENTS: dict[str, object] = {}


def dask_client(address: str, timeout: float = DASK_CONNECT_TIMEOUT):
    """A (cached) dask.distributed client; a clear error if the scheduler cannot be reached."""
    try:
        from distributed import Client
    except ImportError as exc:
        raise ExecutorError("executor 'dask' requires dask.distributed: pip install 'lottery-tickets[dask]'") from exc
    client = _CLIENTS.get(address)
    if client is None or client.status not in ("running", "connecting"):
        try:
            client = Client(address, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            raise ExecutorError(
                f"cannot reach the Dask scheduler at {address!r} within {timeout:g} s ({type(exc).__name__}: {exc}); "
                f"start one with `dask scheduler` or check the address"
            ) from exc
        _CLIENTS[address] = client
    return client


def close_clients() -> None:
    """Close the cached dask clients (e.g. before their cluster shuts down)."""
    while _CLIENTS:
        _, client = _CLIENTS.popitem()
        try:
            client.close()
        except Exception:  # closing a client of a vanished cluster may fail; nothing to keep
            pass


def _run_dask(backend, batch, options, todo, finished) -> None:
    from distributed import as_completed

    if not options.scheduler:
        raise ExecutorError("executor 'dask' needs a scheduler address (--scheduler tcp://host:8786)")
    client = dask_client(options.scheduler)
    worker_options = options.with_(workers=1, progress=False, executor="local", scheduler=None)
    futures = {}
    for key, sl in todo:
        fut = client.submit(solve_chunk, backend, batch.take(sl), worker_options, pure=False, retries=3)
        futures[fut] = (key, sl)
    for fut in as_completed(futures):
        key, sl = futures[fut]
        finished(key, sl, fut.result())


def recompute_errors(batch: ProblemBatch, masks: np.ndarray) -> np.ndarray:
    """|t - sum of kept coefficients| in float64, independent of any backend's arithmetic."""
    return np.abs(batch.targets - np.where(masks, batch.coefficients, 0.0).sum(axis=1))
