"""`gurobi`: Gurobi MILP in floating point with tight, recorded tolerances (optional extra).

Models (binary s, continuous z):

* ``min-error``: minimise z subject to -z <= t - c.s <= z.
* ``min-size``: minimise W |s| + z subject to -z <= t - c.s <= z, z <= eps - tol, with
  W = 2 eps + 1 > max z, so the objective is lexicographic (fewest ones, then smallest error).
  ``tol`` covers Gurobi's feasibility and integrality tolerances, so every accepted subset has a
  true error <= eps; the recorded tolerance is 2 tol, with the same meaning as for CP-SAT.

One Gurobi environment per process (licence checks are slow); one thread per model.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import LicenseError, SolverError
from ..options import SolveOptions
from ..problem import ProblemBatch
from ..result import ChunkSolution, Status
from .base import Backend

GUROBI_PARAMETERS = {
    "Threads": 1,
    "MIPGap": 0.0,
    "MIPGapAbs": 0.0,
    "FeasibilityTol": 1e-9,
    "IntFeasTol": 1e-9,
    "OptimalityTol": 1e-9,
}
SIZE_LIMITED_LICENSE = 10010  # GRB_ERROR_SIZE_LIMIT_EXCEEDED

_ENV = None


def _env():
    """The process's Gurobi environment, started once (quiet)."""
    global _ENV
    if _ENV is None:
        import gurobipy as gp

        try:
            env = gp.Env(empty=True)
            env.setParam("OutputFlag", 0)
            env.start()
        except gp.GurobiError as exc:
            raise LicenseError(
                f"Gurobi could not start an environment (error {exc.errno}: {exc}); check the "
                f"licence (GRB_LICENSE_FILE) or use backend='cpsat' or 'mitm'"
            ) from exc
        _ENV = env
    return _ENV


def license_problem() -> str | None:
    """None when gurobipy is installed and can solve a tiny model, else the reason why not."""
    try:
        import gurobipy  # noqa: F401
    except ImportError:
        return "gurobipy is not installed (pip install 'lottery-tickets[gurobi]')"
    try:
        _env()
    except LicenseError as exc:
        return str(exc)
    return None


def _tolerance(c: np.ndarray) -> float:
    p = GUROBI_PARAMETERS
    return 2 * p["FeasibilityTol"] + p["IntFeasTol"] * (float(np.abs(c).sum()) + 1.0)


class GurobiBackend(Backend):
    name = "gurobi"
    supports_time_limit = True
    required_modules = ("gurobipy",)
    install_hint = "Install it with `pip install 'lottery-tickets[gurobi]'` (or `pip install gurobipy`)."
    default_chunk_size = 16
    #: Gurobi's status codes (gurobipy.GRB.Status): OPTIMAL 2, INFEASIBLE 3, INF_OR_UNBD 4, TIME_LIMIT 9
    STATUS_MAP = {2: Status.OPTIMAL, 3: Status.INFEASIBLE, 4: Status.INFEASIBLE, 9: Status.FEASIBLE}

    def check_available(self) -> None:
        super().check_available()
        _env()

    def certificate(self, options: SolveOptions) -> dict[str, Any]:
        return {
            "method": "Gurobi MILP in floating point",
            "parameters": dict(GUROBI_PARAMETERS, TimeLimit=options.time_limit),
            "tolerance": "2 (2 FeasibilityTol + IntFeasTol (sum|c| + 1))",
        }

    def solve_chunk(self, batch: ProblemBatch, options: SolveOptions) -> ChunkSolution:
        b, m = batch.coefficients.shape
        out = ChunkSolution.empty(b, m)
        for p in range(b):
            n = int(batch.lengths[p])
            t = float(batch.targets[p])
            c = batch.coefficients[p, :n]
            tol = _tolerance(c)
            found = None
            proved_none = False
            if options.objective == "min-size":
                found, proved_none = self._solve(t, c, options, size_eps=max(options.eps - tol, 0.0))
            if found is None:
                found, _ = self._solve(t, c, options, size_eps=None)
                mask, status, bound = found
                if options.objective == "min-size":
                    out.fallback[p] = True
                    status = Status.INFEASIBLE if proved_none and status == Status.OPTIMAL else Status.FEASIBLE
                out.error_bound[p] = bound
            else:
                mask, status, bound = found
                out.size_bound[p] = bound
            out.masks[p, :n] = mask
            out.status[p] = status
            out.tolerance[p] = 2 * tol
        return out

    def _solve(self, t: float, c: np.ndarray, options: SolveOptions, size_eps: float | None):
        """One model. ``size_eps`` None: min-error; else min-size with z <= size_eps.

        Returns (solution or None, proved_none).
        """
        import gurobipy as gp
        from gurobipy import GRB

        n = len(c)
        env = _env()
        try:
            with gp.Model(env=env) as model:
                for key, value in GUROBI_PARAMETERS.items():
                    model.setParam(key, value)
                if options.time_limit is not None:
                    model.setParam("TimeLimit", options.time_limit)
                s = model.addMVar(n, vtype=GRB.BINARY, name="s")  # keep coefficient k?
                z_ub = GRB.INFINITY if size_eps is None else size_eps
                z = model.addVar(lb=0.0, ub=z_ub, name="z")  # z >= |t - c.s|
                model.addConstr(c @ s - z <= t, name="above")  # c.s <= t + z
                model.addConstr(c @ s + z >= t, name="below")  # c.s >= t - z
                if options.max_size is not None:
                    model.addConstr(s.sum() <= options.max_size, name="max_size")
                if size_eps is None:
                    model.setObjective(z, GRB.MINIMIZE)
                    weight = 0.0
                else:
                    weight = 2 * size_eps + 1.0
                    model.setObjective(weight * s.sum() + z, GRB.MINIMIZE)
                model.optimize()
                st = self.map_status(model.Status, f"code {model.Status}")
                if st == Status.INFEASIBLE:
                    return None, True
                if model.SolCount == 0:  # the time limit struck before any solution
                    return None, False
                mask = np.asarray(s.X) > 0.5
                native_bound = model.ObjBound
        except gp.GurobiError as exc:
            if exc.errno == SIZE_LIMITED_LICENSE:
                raise LicenseError(
                    f"Gurobi's size-limited licence refused a model with {n + 1} variables "
                    f"(error {exc.errno}: {exc}); install a full licence or use backend='cpsat'"
                ) from exc
            raise SolverError(f"Gurobi failed (error {exc.errno}): {exc}") from exc
        if size_eps is None:
            bound = max(0.0, native_bound)
        else:
            bound = float(math.floor(native_bound / weight + 1e-9))  # z < weight
        return (mask, st, bound), False

