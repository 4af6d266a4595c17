"""`mitm`: exact meet-in-the-middle, O(2^(m/2)) per problem, batched on CPU threads or a GPU.

On the CPU the numba kernel (:mod:`._mitm_numba`) runs one problem per thread at C speed; on
CUDA (``device='cuda'``), or on the CPU with ``engine='torch'``, the torch kernel
(:mod:`._mitm_torch`) vectorises a whole chunk. Both are exact for ``min-error`` and
``min-size`` (with or without ``max_size``): the only inexactness is float64 rounding of the
sums, recorded as the tolerance.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import BackendUnavailableError, ProblemTooLargeError
from ..options import SolveOptions
from ..problem import ProblemBatch
from ..result import ChunkSolution, Status
from .base import Backend

MAX_BITS = 62  # subset masks are int64 bit sets
#: batches up to this many problems run on one thread: starting the parallel kernel costs more
SERIAL_BATCH = 1024


def float_tolerance(batch: ProblemBatch) -> np.ndarray:
    """Bound on float64 rounding in a sum of up to m terms compared against the target."""
    scale = np.abs(batch.targets) + np.abs(batch.coefficients).sum(axis=1)
    return 2.0 * (batch.lengths + 1) * np.finfo(np.float64).eps * scale


def _numba_bytes_per_thread(n: int) -> int:
    from ._mitm_numba import BUCKETS_PER_SUM

    h_left = n // 2
    h_right = n - h_left
    return 8 * ((6 + 2 * BUCKETS_PER_SUM) * ((1 << h_right) + 1) + 4 * ((1 << h_left) + 1))


class MitmBackend(Backend):
    name = "mitm"
    parallelism = "in-process"
    default_chunk_size = 16384

    def _engine(self, options: SolveOptions) -> str:
        if options.device != "cpu":
            return "torch"
        return options.engine or "numba"

    def check(self, batch: ProblemBatch, options: SolveOptions) -> None:
        super().check(batch, options)
        n = batch.max_length
        alternatives = "use backend='cpsat' or 'gurobi' for problems this large"
        if n > MAX_BITS:
            raise ProblemTooLargeError(
                f"backend 'mitm' handles at most {MAX_BITS} coefficients per problem; got m={n}; "
                f"{alternatives}"
            )
        if options.device != "cpu":
            import torch

            if not torch.cuda.is_available():
                raise BackendUnavailableError(
                    f"backend 'mitm' was asked for device={options.device!r} but torch sees no "
                    f"CUDA device (torch {torch.__version__}, torch.cuda.is_available() is False); "
                    f"use device='cpu'"
                )
        if self._engine(options) == "numba":
            need = _numba_bytes_per_thread(n) * options.workers
            what = f"{options.workers} thread(s) x {_numba_bytes_per_thread(n) / 2**20:.1f} MiB"
        else:
            from ._mitm_torch import bytes_per_problem

            need = bytes_per_problem(n)
            what = "one problem's sum tables"
        if need > options.memory_limit:
            raise ProblemTooLargeError(
                f"backend 'mitm' would need {need / 2**30:.2f} GiB ({what}) for m={n} "
                f"coefficients, above memory_limit={options.memory_limit / 2**30:.2f} GiB; "
                f"raise `memory_limit`, use fewer workers, or {alternatives}"
            )

    def prepare(self, batch: ProblemBatch, options: SolveOptions) -> SolveOptions:
        if options.chunk_size is None and self._engine(options) == "torch":
            from ._mitm_torch import bytes_per_problem

            per = bytes_per_problem(max(batch.max_length, 1))
            return options.with_(chunk_size=max(1, min(65536, options.memory_limit // per)))
        return options

    def certificate(self, options: SolveOptions) -> dict[str, Any]:
        return {
            "method": "meet-in-the-middle, exhaustive over all 2^m subsets",
            "engine": self._engine(options),
            "device": options.device,
            "tolerance": "float64 rounding: 2 (m+1) eps64 (|t| + sum|c|)",
        }

    def solve_chunk(self, batch: ProblemBatch, options: SolveOptions) -> ChunkSolution:
        if self._engine(options) == "numba":
            out = self._solve_numba(batch, options)
        else:
            out = self._solve_torch(batch, options)
        out.tolerance = float_tolerance(batch)
        return out

    def _solve_numba(self, batch: ProblemBatch, options: SolveOptions) -> ChunkSolution:
        import numba

        from ._mitm_numba import MODE_MIN_ERROR, MODE_MIN_SIZE, mitm_batch, mitm_serial

        threads = max(1, min(options.workers, numba.config.NUMBA_NUM_THREADS))
        numba.set_num_threads(threads)
        b, m = batch.coefficients.shape
        out = ChunkSolution.empty(b, m)
        objective = np.empty(b)
        mode = MODE_MIN_SIZE if options.objective == "min-size" else MODE_MIN_ERROR
        eps = -1.0 if options.eps is None else options.eps
        max_size = -1 if options.max_size is None else options.max_size
        if threads == 1 or b <= SERIAL_BATCH:  # no parallel kernel (slow to compile, no gain here)
            mitm_serial(batch.targets, batch.coefficients, batch.lengths, mode, eps, max_size,
                        out.masks, out.status, objective)
        else:
            n_blocks = max(1, min(b, threads * 8))
            mitm_batch(batch.targets, batch.coefficients, batch.lengths, mode, eps, max_size, n_blocks,
                       out.masks, out.status, objective)
        out.fallback = out.status == Status.INFEASIBLE
        out.set_objective(slice(None), objective, options.objective == "min-size")
        return out

    def _solve_torch(self, batch: ProblemBatch, options: SolveOptions) -> ChunkSolution:
        import torch

        from ._mitm_torch import mitm_torch

        b, m = batch.coefficients.shape
        out = ChunkSolution.empty(b, m)
        device = torch.device(options.device)
        for n in np.unique(batch.lengths):
            rows = np.flatnonzero(batch.lengths == n)
            t = torch.from_numpy(batch.targets[rows]).to(device)
            c = torch.from_numpy(batch.coefficients[rows, :n]).to(device)
            masks, infeasible, obj = mitm_torch(t, c, options.objective, options.eps, options.max_size)
            out.masks[rows, :n] = masks.cpu().numpy()
            infeasible = infeasible.cpu().numpy()
            out.status[rows] = np.where(infeasible, Status.INFEASIBLE, Status.OPTIMAL)
            out.fallback[rows] = infeasible
            out.set_objective(rows, obj.cpu().numpy(), options.objective == "min-size")
        return out
