"""`cpsat`: OR-Tools CP-SAT on the integer-rounded problem, settled exactly in float64.

CP-SAT needs integers, so with resolution delta: T = round(t / delta), C_k = round(c_k / delta).
Writing t = delta T + r_t and c_k = delta C_k + r_k with |r| <= delta / 2, for any subset s

    | |t - c.s| - delta |T - C.s| | <= (|s| + 1) delta / 2 <= (m + 1) delta / 2.

1. The grid problem is solved: ``min-error`` minimises z >= |T - C.s|; ``min-size`` minimises
   (E + 1) |s| + z with z = |T - C.s| <= E = floor(eps / delta - (m + 1) / 2), so every subset it
   accepts has true error <= eps (the objective is lexicographic: fewest ones, then smallest error).
2. The band is settled in float64: by the inequality, every subset whose true error is at most
   e has grid error <= e / delta + (m + 1) / 2. CP-SAT enumerates every subset of that band
   (``enumerate_all_solutions``) with at most as many ones as the answer in hand (min-size: e = eps;
   min-error: e = the true error of the grid answer), and the best in float64 is returned: fewest
   ones with error <= eps, then the smallest error; or the smallest error. A complete enumeration
   makes the answer exact up to float64 rounding (the tolerance recorded, as for mitm); a time
   limit that stops it reports FEASIBLE.

Default resolution: ``min-size`` delta = eps / (10 (m + 1)) (a band of about eps / 10 around eps);
``min-error`` delta = 1e-7 max(|t|, max|c|) per problem. Parameters found by measurement on
m = 21 problems: ``linearization_level=0`` and no CP-SAT presolve are 3-4x faster than the
defaults on these tiny models; the grid model is built once per chunk and only its coefficients
change per problem.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import SolverError, SolverInputError
from ..options import SolveOptions
from ..problem import ProblemBatch
from ..result import ChunkSolution, Status
from .base import Backend
from .mitm import float_tolerance
from .settle import best_min_error, best_min_size

MIN_ERROR_RELATIVE_RESOLUTION = 1e-7
MIN_SIZE_BAND_FRACTION = 0.1  # min-size default grid: the band (m + 1) delta is this * eps
INT_LIMIT = 2**50  # keep every integer sum far from int64 overflow

CPSAT_PARAMETERS = {"num_workers": 1, "linearization_level": 0, "cp_model_presolve": False}


class _Template:
    """A CP-SAT model for n coefficients whose numbers are overwritten per problem."""

    def __init__(self, n: int, objective: str, max_size: int | None, time_limit: float | None):
        from ortools.sat.python import cp_model

        self.cp_model = cp_model
        self.n = n
        model = cp_model.CpModel()
        self.s = [model.new_bool_var(f"s{k}") for k in range(n)]  # s_k = 1: keep coefficient k
        self.z = model.new_int_var(0, 1, "z")  # z >= |T - C.s| (domain set per problem)
        # C.s - z <= T and C.s + z >= T, i.e. |T - C.s| <= z (coefficients set per problem)
        model.add(sum(self.s) - self.z <= 0)
        model.add(sum(self.s) + self.z >= 0)
        if max_size is not None:
            model.add(sum(self.s) <= max_size)  # at most max_size ones
        if objective == "min-size":
            model.minimize(sum(self.s) + self.z)  # weights of s set per problem to E + 1
        else:
            model.minimize(self.z)
        self.model = model
        self.proto = model.Proto()
        self.solver = cp_model.CpSolver()
        for key, value in CPSAT_PARAMETERS.items():
            setattr(self.solver.parameters, key, value)
        if time_limit is not None:
            self.solver.parameters.max_time_in_seconds = time_limit
        self.minimise_size = objective == "min-size"

    def solve(self, T: int, C: list[int], z_max: int, size_weight: int) -> tuple[str, np.ndarray, float, float]:
        """Returns (native status name, mask, objective value, objective bound)."""
        n = self.n
        upper, lower = self.proto.constraints[0].linear, self.proto.constraints[1].linear
        for k in range(n):
            upper.coeffs[k] = C[k]
            lower.coeffs[k] = C[k]
        upper.domain[0], upper.domain[1] = -INT_LIMIT * 4, T
        lower.domain[0], lower.domain[1] = T, INT_LIMIT * 4
        self.proto.variables[n].domain[1] = z_max
        if self.minimise_size:
            for k in range(n):
                self.proto.objective.coeffs[k] = size_weight
        status = self.solver.solve(self.model)
        name = self.solver.status_name(status)
        cp = self.cp_model
        if status == cp.MODEL_INVALID:
            raise SolverError(
                f"CP-SAT rejected the model ({name}): {self.model.validate()}; "
                f"T={T}, C={C}, z_max={z_max}"
            )
        if status in (cp.OPTIMAL, cp.FEASIBLE):
            mask = np.array([self.solver.boolean_value(v) for v in self.s], dtype=bool)
            return name, mask, self.solver.objective_value, self.solver.best_objective_bound
        return name, np.zeros(n, dtype=bool), math.nan, self.solver.best_objective_bound


class CpsatBackend(Backend):
    name = "cpsat"
    supports_time_limit = True
    required_modules = ("ortools",)
    install_hint = "Install it with `pip install ortools`."
    default_chunk_size = 128
    #: CP-SAT status names; UNKNOWN: the time limit struck before any proof (or any solution)
    STATUS_MAP = {"OPTIMAL": Status.OPTIMAL, "FEASIBLE": Status.FEASIBLE, "INFEASIBLE": Status.INFEASIBLE,
                  "UNKNOWN": Status.FEASIBLE}

    def prepare(self, batch: ProblemBatch, options: SolveOptions) -> SolveOptions:
        if options.resolution is None and options.objective == "min-size" and options.eps == 0:
            raise SolverInputError(
                "backend 'cpsat' with objective 'min-size' and eps=0 needs an explicit "
                "`resolution` (integer rounding cannot certify exact equality); got resolution=None"
            )
        return options

    def certificate(self, options: SolveOptions) -> dict[str, Any]:
        if options.resolution is not None:
            res = f"{options.resolution:g} (given)"
        elif options.objective == "min-size":
            res = f"eps / (10 (m + 1)): a band of {MIN_SIZE_BAND_FRACTION:g} eps to settle"
        else:
            res = f"{MIN_ERROR_RELATIVE_RESOLUTION:g} * max(|t|, max|c|) per problem"
        return {
            "method": "CP-SAT on the problem rounded to integers at a resolution delta, then every subset of the "
                      "band of (m + 1) delta / 2 around it enumerated and settled in float64",
            "resolution": res,
            "tolerance": "float64 rounding: 2 (m+1) eps64 (|t| + sum|c|)",
            "parameters": dict(CPSAT_PARAMETERS, max_time_in_seconds=options.time_limit),
        }

    def _resolution(self, t: float, c: np.ndarray, options: SolveOptions) -> float:
        if options.resolution is not None:
            return options.resolution
        n = len(c)
        if options.objective == "min-size":
            return MIN_SIZE_BAND_FRACTION * options.eps / (n + 1)
        scale = max(abs(t), float(np.abs(c).max()) if n else 0.0, 1e-300)
        return MIN_ERROR_RELATIVE_RESOLUTION * scale

    def solve_chunk(self, batch: ProblemBatch, options: SolveOptions) -> ChunkSolution:
        b, m = batch.coefficients.shape
        out = ChunkSolution.empty(b, m)
        templates: dict[tuple[int, str], _Template] = {}

        def template(n: int, objective: str) -> _Template:
            key = (n, objective)
            if key not in templates:
                templates[key] = _Template(n, objective, options.max_size, options.time_limit)
            return templates[key]

        for p in range(b):
            n = int(batch.lengths[p])
            t = float(batch.targets[p])
            c = batch.coefficients[p, :n]
            delta = self._resolution(t, c, options)
            if options.objective == "min-size":
                found = self._min_size(template(n, "min-size"), t, c, delta, options.eps)
                # every subset within eps in float64 lies in the band of grid error <= eps / delta + (n + 1) / 2
                cap = int(found[2]) if found is not None else (options.max_size if options.max_size is not None else n)
                settled, complete = self._settle(t, c, delta, options.eps / delta + (n + 1) / 2, cap, options)
                # the band holds every subset within eps with at most `cap` ones, and one of them has
                # the fewest ones: a complete enumeration settles the answer exactly
                best = best_min_size(settled, complete, options.eps)
                if best is not None:
                    size, mask, status = best
                    out.size_bound[p] = size if status == Status.OPTIMAL else np.nan
                else:
                    mask, status, bound = self._exact_min_error(template(n, "min-error"), t, c, delta, options)
                    out.fallback[p] = True
                    status = Status.INFEASIBLE if complete and status == Status.OPTIMAL else Status.FEASIBLE
                    out.error_bound[p] = bound
            else:
                mask, status, bound = self._exact_min_error(template(n, "min-error"), t, c, delta, options)
                out.error_bound[p] = bound
            out.masks[p, :n] = mask
            out.status[p] = status
        out.tolerance = float_tolerance(batch)
        return out

    def _exact_min_error(self, tpl: _Template, t: float, c: np.ndarray, delta: float, options: SolveOptions):
        """The grid optimum, then every subset of the band around it settled in float64."""
        mask, status, bound = self._min_error(tpl, t, c, delta)
        found = abs(t - c[mask].sum())
        settled, complete = self._settle(t, c, delta, found / delta + (len(c) + 1) / 2,
                                         options.max_size if options.max_size is not None else len(c), options)
        return best_min_error(settled, complete, mask, found, status, bound)

    def _settle(self, t: float, c: np.ndarray, delta: float, band: float, max_ones: int, options: SolveOptions):
        """Every subset with at most ``max_ones`` ones and grid error <= ``band`` (CP-SAT enumerates
        them all), with its float64 error. Returns ([(size, error, mask)], complete)."""
        from ortools.sat.python import cp_model

        T, C = self._integers(t, c, delta)
        reach = math.floor(band)
        model = cp_model.CpModel()
        s = [model.new_bool_var(f"s{k}") for k in range(len(c))]  # s_k = 1: keep coefficient k
        model.add_linear_constraint(sum(C[k] * s[k] for k in range(len(c))), T - reach, T + reach)  # in the band
        model.add(sum(s) <= max_ones)  # no more ones than the answer in hand (or the cap)
        found: list[tuple[int, float, np.ndarray]] = []

        class Collect(cp_model.CpSolverSolutionCallback):
            def on_solution_callback(self) -> None:
                mask = np.array([self.boolean_value(v) for v in s], dtype=bool)
                found.append((int(mask.sum()), abs(t - c[mask].sum()), mask))

        solver = cp_model.CpSolver()
        for key, value in CPSAT_PARAMETERS.items():
            setattr(solver.parameters, key, value)
        solver.parameters.enumerate_all_solutions = True
        if options.time_limit is not None:
            solver.parameters.max_time_in_seconds = options.time_limit
        status = solver.solve(model, Collect())
        complete = status in (cp_model.OPTIMAL, cp_model.INFEASIBLE)  # the search ran to its end
        return found, complete

    @staticmethod
    def _integers(t: float, c: np.ndarray, delta: float) -> tuple[int, list[int]]:
        T = round(t / delta)
        C = np.rint(c / delta)
        if abs(T) + np.abs(C).sum() > INT_LIMIT:
            raise SolverInputError(
                f"backend 'cpsat': resolution {delta:g} is too fine for target {t:g} and "
                f"coefficients up to {np.abs(c).max():g} (integers would exceed {INT_LIMIT:.0e}); "
                f"pass a coarser `resolution`"
            )
        return int(T), [int(x) for x in C]

    def _min_error(self, tpl: _Template, t: float, c: np.ndarray, delta: float):
        T, C = self._integers(t, c, delta)
        z_max = abs(T) + sum(abs(x) for x in C)
        name, mask, value, bound = tpl.solve(T, C, z_max, 0)
        n = len(c)
        true_bound = max(0.0, delta * bound - (n + 1) * delta / 2) if math.isfinite(bound) else math.nan
        return mask, self.map_status(name), true_bound

    def _min_size(self, tpl: _Template, t: float, c: np.ndarray, delta: float, eps: float):
        """Fewest ones with |error| <= eps at resolution delta: (mask, status, size), or None when no
        subset was found (none exists on the grid, or the time limit struck first: the band
        settling decides which)."""
        n = len(c)
        E = math.floor(eps / delta - (n + 1) / 2)
        if E < 0:
            raise SolverInputError(
                f"backend 'cpsat': resolution {delta:g} is too coarse for eps={eps:g} with m={n} "
                f"(need (m + 1) * resolution / 2 < eps); pass a finer `resolution`"
            )
        T, C = self._integers(t, c, delta)
        name, mask, value, bound = tpl.solve(T, C, E, E + 1)
        status = self.map_status(name)
        if status == Status.OPTIMAL:
            return mask, status, float(int(value) // (E + 1))
        if name == "FEASIBLE":  # a fitting subset, not proved smallest
            return mask, status, float(math.ceil(bound) // (E + 1))
        return None  # INFEASIBLE on the grid, or UNKNOWN: nothing found
