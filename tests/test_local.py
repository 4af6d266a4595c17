"""Local certificates: the certified sup of |f - g| over a ball around each verified input holds on
every point of the ball tried, is tightened by the linear relaxation where it applies, and never
exceeds the whole domain's bound."""

from __future__ import annotations

import json

import pytest
import torch

from models.bounds import interval_bounds
from models.collapsed import collapse
from models.construct import construct
from models.options import ConstructOptions
from models.verify import errors, kept, verify

from .nets import tiny_cnn, tiny_mlp, token_classifier

CASES = {"mlp (linear relaxation)": (tiny_mlp, (5,), (0.0, 1.0)), "cnn (intervals)": (tiny_cnn, (2, 8, 8), (-1.0, 1.0))}


def _construct(make, shape, domain):
    return construct(make(), shape, domain, ConstructOptions.from_kwargs(n=6, progress=False, workers=1))


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("radius", [0.0, 0.05])
def test_each_balls_bound_holds_on_points_of_the_ball(case, radius):
    make, shape, domain = CASES[case]
    c = _construct(make, shape, domain)
    check = verify(c, None, samples=30, radius=radius)
    local = check.local
    assert local is not None and local.radius == radius and len(local.bound) == check.float64_inputs
    assert local.holds and check.bound_holds and max(local.bound) <= check.certified_bound
    # the inputs in the order the certificates are given: the largest errors first
    x = c.domain.samples(c.input_shape, 30, c.options.seed).double()
    g = collapse(c.folded, c.layers, kept(c))
    with torch.no_grad():
        err = (c.folded(x) - g(x)).abs().reshape(len(x), -1).amax(1)
    x = x[err.argsort(descending=True)]
    gen = torch.Generator().manual_seed(1)
    for i in range(6):
        points = (x[i] + radius * (2 * torch.rand((200, *shape), generator=gen, dtype=torch.float64) - 1))
        points = torch.cat([x[i:i + 1], points.clamp(domain[0], domain[1])])
        with torch.no_grad():
            seen = float((c.folded(points) - g(points)).abs().max())
        assert seen <= local.bound[i], (i, seen, local.bound[i])
        assert local.found[i] <= local.bound[i]


def test_the_linear_relaxation_tightens_the_interval_bound_of_a_ball():
    c = _construct(tiny_mlp, (5,), (0.0, 1.0))
    check = verify(c, None, samples=30, radius=0.05)
    assert check.local.tightened >= 1 and "linear relaxation" in check.local.method
    x = c.domain.samples(c.input_shape, 30, c.options.seed).double()
    g = collapse(c.folded, c.layers, kept(c))
    with torch.no_grad():
        x = x[(c.folded(x) - g(x)).abs().amax(1).argsort(descending=True)]
    out, slack = interval_bounds(c.folded, c.layers, errors(c), c.domain.balls(x[:1], 0.05))
    interval = float((out.delta + slack).max())
    assert check.local.bound[0] < interval  # strictly tighter on this ticket


def test_radius_is_recorded_and_reused_by_verify(tmp_path, capsys):
    from models.cli import main

    path = tmp_path / "m.pt"
    torch.save(tiny_mlp().state_dict(), path)
    out = tmp_path / "run"
    base = ["solve", str(path), "--arch", "mlp", "--input-shape", "5", "--data", "none", "--n", "6", "--no-progress"]
    assert main(base + ["--radius", "0.02", "--out", str(out)]) == 0
    assert "local certified bound over l_inf balls of radius 0.02 around the" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    local = report["local_certificates"]
    assert local["radius"] == 0.02 and local["holds"] and "bound" not in local  # the summary, not the lists
    assert local["max_bound"] <= report["certified_bound"]
    assert main(["verify", str(out)]) == 0
    assert main(base + ["--out", str(tmp_path / "none")]) == 0  # none unless asked for
    assert json.loads((tmp_path / "none" / "report.json").read_text())["local_certificates"] is None
    assert main(base + ["--radius", "-1", "--out", str(tmp_path / "bad")]) == 2
    assert "the radius of local certificates must be a number >= 0; got -1.0" in capsys.readouterr().err


def test_token_inputs_have_no_ball():
    c = construct(token_classifier(), (5,), (0.0, 19.0), ConstructOptions.from_kwargs(n=4, progress=False, workers=1))
    check = verify(c, None, samples=8, radius=0.0)
    assert check.local is None and "token inputs have no ball" in check.local_reason
    assert check.to_json()["local"] == {"reason": check.local_reason}
