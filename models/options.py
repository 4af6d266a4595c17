"""The construction's options: one frozen dataclass, validated when made, recorded in the report and
the ticket. Every field is declared once with its help text and checks (:func:`solver.options.option`);
the CLI's flags are generated from the declarations."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from solver import SolverInputError, SolverTypeError
from solver.options import SolveOptions, hashed_fields, option, validate

from .random_net import LAYOUTS

SCALE_POLICIES = ("max", "rms")
DEFAULT_MARGINS = {"max": 1.5, "rms": 5.0}


@dataclass(frozen=True)
class ConstructOptions:
    """Settings of a construction, validated on construction (recorded in the report and ticket).

    The solver's settings are the nested :class:`solver.SolveOptions` (every core by default)."""

    n: int | str = option(21, "coefficients per subset-sum problem (the paper's n; its experiment used 21), or "
                          "'auto': per layer the smallest n <= --n-max with every weight within eps",
                          kind=int, low=1, words=("auto",), cli="--n")
    n_min: int = option(1, "the smallest n that --n auto tries (e.g. 21: n = 21 for a layer unless one of its "
                        "weights misses eps there)", kind=int, low=1, cli="--n-min")
    n_max: int = option(32, "the largest n that --n auto tries", kind=int, low=1, cli="--n-max")
    backend: str = option("auto", "auto | mitm | cpsat | gurobi | brute", kind=str, cli="--backend")
    seed: int = option(0, "random network seed", kind=int, cli="--seed")
    layout: str = option("balanced", "balanced: n units per sign group, B scaled to the layer, half the products "
                         "of every weight positive; fixed-sign: the same with random product signs; paper: all "
                         "i.i.d. U[-1,1]", choices=LAYOUTS, cli="--layout")
    scale_policy: str = option("max", "B ~ U[-s,s] with s = margin * the layer's largest |weight or bias| (max) or "
                               "their root mean square (rms: denser coefficients near typical weights, smaller "
                               "tickets)", choices=SCALE_POLICIES, cli="--scale-policy")
    scale_margin: float | None = option(None, "the margin of --scale-policy (default 1.5 for max, 5 for rms)",
                                        kind=float, low=0.0, low_open=True, cli="--scale-margin")
    scales: dict = option(doc="per-layer overrides of the B scale", default_factory=dict)
    block_problems: int = option(1 << 17, "problems built and held in memory at once per layer: memory is bounded "
                                 "by this, not by the network", kind=int, low=1, cli="--block-problems")
    solve: SolveOptions = option(doc="the solver's settings", default_factory=SolveOptions)

    def __post_init__(self) -> None:
        validate(self)
        if not isinstance(self.solve, SolveOptions):
            raise SolverTypeError(f"`solve` must be a solver.SolveOptions; got {type(self.solve).__name__} instead")
        if self.n_min > self.n_max:
            raise SolverInputError(f"`n_min` must be <= `n_max`; got n_min={self.n_min}, n_max={self.n_max}")
        if self.n == "auto" and self.solve.eps is None:
            raise SolverInputError("`n='auto'` needs `eps`: it picks the smallest n with every weight within eps")

    @property
    def objective(self) -> str:
        return self.solve.objective

    @property
    def eps(self) -> float | None:
        return self.solve.eps

    @property
    def margin(self) -> float:
        """The scale margin in force: the given one, else the policy's default."""
        return float(self.scale_margin) if self.scale_margin is not None else DEFAULT_MARGINS[self.scale_policy]

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "ConstructOptions":
        """Options from flat keywords: the construction's fields and any :class:`SolveOptions` field."""
        own = {f.name for f in fields(cls)} - {"solve"}
        solve_kwargs = {k: v for k, v in kwargs.items() if k not in own}
        return cls(**{k: v for k, v in kwargs.items() if k in own}, solve=SolveOptions.from_kwargs(**solve_kwargs))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ConstructOptions":
        return cls(**{k: v for k, v in d.items() if k != "solve"}, solve=SolveOptions(**d["solve"]))

    def hashed(self) -> dict[str, Any]:
        """The fields that determine the result (for the run's configuration hash)."""
        return dict(hashed_fields(self), solve=hashed_fields(self.solve))
