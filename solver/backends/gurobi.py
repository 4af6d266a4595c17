"""`gurobi`: Gurobi MILP in floating point, settled exactly in float64 (optional extra).

Models (binary s, continuous z):

* ``min-error``: minimise z subject to -z <= t - c.s <= z.
* ``min-size``: minimise W |s| + z subject to -z <= t - c.s <= z, z <= eps - tol, with
  W = 2 eps + 1 > max z, so the objective is lexicographic (fewest ones, then smallest error).
  ``tol`` covers Gurobi's feasibility and integrality tolerances, so every accepted subset has a
  true error <= eps.

Then the band that can hold the float64 optimum is settled, as for cpsat: every subset with
|t - c.s| <= e + tol and at most as many ones as the answer in hand (min-size: e = eps;
min-error: e = the float64 error of Gurobi's answer) is enumerated with Gurobi's solution pool
(``PoolSearchMode=2`` on a model without objective) and the best in float64 is returned. A
complete enumeration makes the answer exact up to float64 rounding; a time limit reports FEASIBLE.

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
from .mitm import float_tolerance
from .settle import best_min_error, best_min_size

GUROBI_PARAMETERS = {
    "Threads": 1,
    "MIPGap": 0.0,
    "MIPGapAbs": 0.0,
    "FeasibilityTol": 1e-9,
    "IntFeasTol": 1e-9,
    "OptimalityTol": 1e-9,
}
SIZE_LIMITED_LICENSE = 10010  # GRB_ERROR_SIZE_LIMIT_EXCEEDED
POOL_LIMIT = 1_000_000  # band solutions kept; reaching it counts as an incomplete enumeration

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


def _model_error(exc, variables: int) -> SolverError:
    """A GurobiError raised by a model, as this package reports it (a licence limit as such)."""
    if exc.errno == SIZE_LIMITED_LICENSE:
        return LicenseError(f"Gurobi's size-limited licence refused a model with {variables} variables "
                            f"(error {exc.errno}: {exc}); install a full licence or use backend='cpsat'")
    return SolverError(f"Gurobi failed (error {exc.errno}): {exc}")


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
            "settling": "solution pool (PoolSearchMode 2) over the band |t - c.s| <= e + 2 FeasibilityTol + "
                        "IntFeasTol (sum|c| + 1), best subset chosen in float64",
            "tolerance": "float64 rounding: 2 (m+1) eps64 (|t| + sum|c|)",
        }

    def solve_chunk(self, batch: ProblemBatch, options: SolveOptions) -> ChunkSolution:
        b, m = batch.coefficients.shape
        out = ChunkSolution.empty(b, m)
        for p in range(b):
            n = int(batch.lengths[p])
            t = float(batch.targets[p])
            c = batch.coefficients[p, :n]
            tol = _tolerance(c)
            cap = options.max_size if options.max_size is not None else n
            if options.objective == "min-size":
                found = self._solve(t, c, options, size_eps=max(options.eps - tol, 0.0))
                # every subset within eps in float64 satisfies the band's constraints (widened by the tolerances)
                settled, complete = self._settle(t, c, options.eps + tol, int(found[2]) if found else cap, options)
                best = best_min_size(settled, complete, options.eps)
                if best is not None:
                    size, mask, status = best
                    out.size_bound[p] = size if status == Status.OPTIMAL else np.nan
                else:
                    mask, status, bound = self._exact_min_error(t, c, tol, cap, options)
                    out.fallback[p] = True
                    status = Status.INFEASIBLE if complete and status == Status.OPTIMAL else Status.FEASIBLE
                    out.error_bound[p] = bound
            else:
                mask, status, bound = self._exact_min_error(t, c, tol, cap, options)
                out.error_bound[p] = bound
            out.masks[p, :n] = mask
            out.status[p] = status
        out.tolerance = float_tolerance(batch)
        return out

    def _exact_min_error(self, t: float, c: np.ndarray, tol: float, cap: int, options: SolveOptions):
        """Gurobi's optimum, then every subset of the band around it settled in float64."""
        mask, status, bound = self._solve(t, c, options, size_eps=None)
        found = abs(t - c[mask].sum())
        settled, complete = self._settle(t, c, found + tol, cap, options)
        return best_min_error(settled, complete, mask, found, status, bound)

    def _settle(self, t: float, c: np.ndarray, band: float, max_ones: int, options: SolveOptions):
        """Every subset with at most ``max_ones`` ones and |t - c.s| <= ``band`` (Gurobi's solution
        pool, PoolSearchMode 2 on a model without objective: all feasible points), with its float64
        error. Returns ([(size, error, mask)], complete)."""
        import gurobipy as gp
        from gurobipy import GRB

        n = len(c)
        try:
            with gp.Model(env=_env()) as model:
                for key, value in GUROBI_PARAMETERS.items():
                    model.setParam(key, value)
                model.setParam("PoolSearchMode", 2)  # systematic: all solutions up to PoolSolutions
                model.setParam("PoolSolutions", POOL_LIMIT)
                if options.time_limit is not None:
                    model.setParam("TimeLimit", options.time_limit)
                s = model.addMVar(n, vtype=GRB.BINARY, name="s")  # keep coefficient k?
                model.addConstr(c @ s <= t + band, name="above")  # c.s within the band around t
                model.addConstr(c @ s >= t - band, name="below")
                model.addConstr(s.sum() <= max_ones, name="ones")  # no more ones than the answer in hand
                model.optimize()
                status = self.map_status(model.Status, f"code {model.Status}")
                found = []
                for k in range(model.SolCount):
                    model.setParam("SolutionNumber", k)
                    mask = np.asarray(s.Xn) > 0.5
                    found.append((int(mask.sum()), abs(t - c[mask].sum()), mask))
        except gp.GurobiError as exc:
            raise _model_error(exc, n) from exc
        complete = status in (Status.OPTIMAL, Status.INFEASIBLE) and len(found) < POOL_LIMIT
        return found, complete

    def _solve(self, t: float, c: np.ndarray, options: SolveOptions, size_eps: float | None):
        """One model. ``size_eps`` None: min-error; else min-size with z <= size_eps.

        Returns (mask, status, bound), or None when there is no solution (infeasible, or none
        found before the time limit: the band settling decides which).
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
                if st == Status.INFEASIBLE or model.SolCount == 0:  # none, or none before the time limit
                    return None
                mask = np.asarray(s.X) > 0.5
                native_bound = model.ObjBound
        except gp.GurobiError as exc:
            raise _model_error(exc, n + 1) from exc
        if size_eps is None:
            bound = max(0.0, native_bound)
        else:
            bound = float(math.floor(native_bound / weight + 1e-9))  # z < weight
        return mask, st, bound

