"""Options are declared once: solve()'s keywords, the CLI flags and the config hash derive from them."""

from __future__ import annotations

import inspect
from dataclasses import fields

import pytest

import solver
from models.cli import build_parser
from models.commands import options_from_args
from models.construct import ConstructOptions
from models.ticket import ticket_options
from solver import SolveOptions


def test_solve_signature_lists_every_option():
    params = inspect.signature(solver.solve).parameters
    for f in fields(SolveOptions):
        assert f.name in params and params[f.name].default == f.default
        assert f.metadata["doc"] and f.name in solver.solve.__doc__


def test_cli_flags_map_to_the_options():
    args = build_parser().parse_args(["solve", "--n", "3", "--time-limit", "2", "--workers", "1", "--no-presolve",
                                      "--objective", "min-size", "--eps", "0.05", "--layout", "paper",
                                      "--chunk-size", "9", "--no-progress"])
    options = options_from_args(args)
    assert options == ConstructOptions(n=3, layout="paper", solve=SolveOptions(
        objective="min-size", eps=0.05, time_limit=2.0, workers=1, presolve=False, chunk_size=9, progress=False))
    flags = {a.dest for a in build_parser()._subparsers._group_actions[0].choices["solve"]._actions}
    for cls in (ConstructOptions, SolveOptions):
        for f in fields(cls):
            assert (f.name in flags) == bool(f.metadata.get("cli")), f.name


def test_config_hash_leaves_out_what_cannot_change_the_result():
    a = ConstructOptions.from_kwargs(n=4, workers=1, progress=False, executor="local")
    b = ConstructOptions.from_kwargs(n=4, workers=2, progress=True)
    assert a.hashed() == b.hashed()
    for change in (dict(n=5), dict(seed=1), dict(chunk_size=7), dict(objective="min-size", eps=0.1),
                   dict(block_problems=10), dict(presolve=False)):
        assert ConstructOptions.from_kwargs(**{"n": 4, **change}).hashed() != a.hashed(), change


def test_options_round_trip_through_a_ticket():
    options = ConstructOptions.from_kwargs(n=4, objective="min-size", eps=0.1, chunk_size=7, layout="fixed-sign")
    assert ticket_options({"version": 3, "options": options.to_dict()}) == options


def test_frozen_options_revalidate_on_change():
    with pytest.raises(solver.SolverInputError, match=r"`chunk_size` must be an int in the range \[1, inf\); got 0"):
        SolveOptions().with_(chunk_size=0)
