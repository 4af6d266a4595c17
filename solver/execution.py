"""Chunked execution: the batch is cut into chunks, each solved by a pure function.

Chunks are independent and every backend is deterministic per problem, so the assembled
result does not depend on the chunk size or the number of workers. Process-parallel
backends (CP-SAT, Gurobi, brute) run chunks in a pool of worker processes; backends that
parallelise themselves (mitm: numba threads or a GPU) run chunks one after another here.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

import numpy as np

from .backends import get_backend
from .backends.base import Backend
from .problem import ProblemBatch, SolveOptions
from .result import ChunkSolution


def solve_chunk(backend_name: str, batch: ProblemBatch, options: SolveOptions) -> ChunkSolution:
    """The unit of parallel work: a pure function of (backend name, problems, options)."""
    return get_backend(backend_name).solve_chunk(batch, options)


def _progress_bar(total: int, n_chunks: int, progress: bool | None, desc: str):
    from tqdm.auto import tqdm

    if progress is None:
        disable = None if n_chunks > 1 else True  # None: tqdm shows it only on a terminal
    else:
        disable = not progress
    return tqdm(total=total, unit="problem", desc=desc, disable=disable, file=sys.stderr, leave=False)


def run_chunks(backend: Backend, batch: ProblemBatch, options: SolveOptions) -> ChunkSolution:
    """Solve ``batch`` chunk by chunk with ``backend``; returns the assembled solution."""
    size = options.chunk_size or backend.default_chunk_size
    slices = [slice(i, min(i + size, batch.size)) for i in range(0, batch.size, size)]
    out = ChunkSolution.empty(batch.size, batch.width)

    def place(sl: slice, part: ChunkSolution) -> None:
        out.masks[sl] = part.masks
        out.status[sl] = part.status
        out.bound[sl] = part.bound
        out.fallback[sl] = part.fallback
        out.tolerance[sl] = part.tolerance

    use_pool = backend.parallelism == "process" and options.workers > 1 and len(slices) > 1
    with _progress_bar(batch.size, len(slices), options.progress, backend.name) as bar:
        if not use_pool:
            for sl in slices:
                place(sl, backend.solve_chunk(batch.take(sl), options))
                bar.update(sl.stop - sl.start)
            return out
        worker_options = options.with_(workers=1, progress=False)
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["solver"])
        with ProcessPoolExecutor(max_workers=options.workers, mp_context=ctx) as pool:
            pending: dict[Future, slice] = {}
            queue = list(reversed(slices))
            # at most 2 chunks per worker in flight: memory stays bounded by the chunk size
            while queue or pending:
                while queue and len(pending) < 2 * options.workers:
                    sl = queue.pop()
                    pending[pool.submit(solve_chunk, backend.name, batch.take(sl), worker_options)] = sl
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    sl = pending.pop(fut)
                    place(sl, fut.result())
                    bar.update(sl.stop - sl.start)
    return out


def recompute_errors(batch: ProblemBatch, masks: np.ndarray) -> np.ndarray:
    """|t - sum of kept coefficients| in float64, independent of any backend's arithmetic."""
    return np.abs(batch.targets - np.where(masks, batch.coefficients, 0.0).sum(axis=1))
