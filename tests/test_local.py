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

from .nets import chain_cnn, tiny_cnn, tiny_mlp, token_classifier

CASES = {"mlp (linear relaxation)": (tiny_mlp, (5,), (0.0, 1.0)), "cnn (intervals)": (tiny_cnn, (2, 8, 8), (-1.0, 1.0)),
         "chain cnn (linear relaxation, pooling)": (chain_cnn, (1, 8, 8), (0.0, 1.0))}


def _construct(make, shape, domain):
    return construct(make(), shape, domain, ConstructOptions.from_kwargs(n=6, progress=False, workers=1))


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("radius", [0.0, 0.05])
def test_each_balls_bound_holds_on_points_of_the_ball(case, radius):
    make, shape, domain = CASES[case]
    c = _construct(make, shape, domain)
    check = verify(c, None, samples=30, radius=radius)
    local = check.local
    assert local is not None and local.radius == radius and local.measured == check.float64_inputs
    assert 1 <= local.inputs <= local.measured  # the linear relaxation on as many as the time planned allows
    assert local.holds and check.bound_holds and max(local.bound) <= check.certified_bound
    # the inputs in the order the certificates are given: the largest errors first
    x = c.domain.samples(c.input_shape, 30, c.options.seed).double()
    g = collapse(c.folded, c.layers, kept(c))
    with torch.no_grad():
        err = (c.folded(x) - g(x)).abs().reshape(len(x), -1).amax(1)
    x = x[err.argsort(descending=True)]
    gen = torch.Generator().manual_seed(1)
    for i in range(min(6, local.inputs)):
        points = (x[i] + radius * (2 * torch.rand((200, *shape), generator=gen, dtype=torch.float64) - 1))
        points = torch.cat([x[i:i + 1], points.clamp(domain[0], domain[1])])
        with torch.no_grad():
            seen = float((c.folded(points) - g(points)).abs().max())
        assert seen <= local.bound[i], (i, seen, local.bound[i])
        assert local.found[i] <= local.bound[i]
        if local.agreed[i]:  # a proved agreement: target and ticket pick the centre's class on every point
            with torch.no_grad():
                classes = torch.cat([c.folded(points).argmax(1), g(points).argmax(1)])
            assert torch.all(classes == classes[0]), i


def test_certified_agreement_is_proved_where_the_margin_is_wide_and_refused_where_it_is_not():
    from models.local import _agreed

    margin = torch.tensor([[0.0, -1.0], [-0.1, 0.0]])  # upper bounds of f_j - f_top; top = 0, then 1
    per_output = torch.tensor([[0.2, 0.3], [0.02, 0.03]])
    assert _agreed(margin, per_output, torch.tensor([0, 1])) == [True, True]  # -1 + 0.5 < 0; -0.1 + 0.05 < 0
    assert _agreed(margin, per_output * 10, torch.tensor([0, 1])) == [False, False]
    # both outputs' errors count: -1 + 0.3 + 0.8 > 0 although -1 + 0.3 < 0
    assert _agreed(margin[:1], torch.tensor([[0.8, 0.3]]), torch.tensor([0])) == [False]
    assert _agreed(margin[:, :1], per_output[:, :1], torch.tensor([0, 0])) is None  # one output: no argmax


@pytest.mark.parametrize("make, shape", [(tiny_mlp, (5,)), (chain_cnn, (1, 8, 8))])
def test_the_relaxation_of_several_balls_at_once_equals_one_at_a_time(monkeypatch, make, shape):
    """Balls relaxed together (each functional with its ball's relaxation) give each ball's own bounds and
    margins; the margins hold on points of each ball."""
    import models.crown as crown

    c = _construct(make, shape, (0.0, 1.0))
    x = c.domain.samples(c.input_shape, 5, 0).double()
    balls = c.domain.balls(x, 0.1)
    with torch.no_grad():
        f = c.folded(x)
    top = f.argmax(1)
    one = crown.crown_regions(c.folded, c.layers, lambda: kept(c), balls, float("inf"), top)
    monkeypatch.setattr(crown, "REGIONS", 3)
    together = crown.crown_regions(c.folded, c.layers, lambda: kept(c), balls, float("inf"), top)
    assert torch.allclose(one[0], together[0], rtol=1e-12, atol=1e-15)
    assert torch.allclose(one[1], together[1], rtol=1e-12, atol=1e-15)
    centre = crown.crown_regions(c.folded, c.layers, lambda: kept(c), c.domain.balls(x, 0.0), float("inf"), top)
    assert torch.allclose(centre[1], f - f.gather(1, top[:, None]), atol=1e-9)  # a point: the margin itself
    gen = torch.Generator().manual_seed(0)
    for i in range(len(x)):
        points = balls.lo[i] + (balls.hi[i] - balls.lo[i]) * torch.rand((300, *shape), generator=gen, dtype=torch.float64)
        with torch.no_grad():
            out = c.folded(points)
        assert torch.all(out - out[:, top[i]:top[i] + 1] <= one[1][i] + 1e-12)


def test_the_linear_relaxation_tightens_the_interval_bound_of_a_ball():
    c = _construct(tiny_mlp, (5,), (0.0, 1.0))
    check = verify(c, None, samples=30, radius=0.05)
    assert "linear relaxation" in check.local.method
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
    printed = capsys.readouterr().out
    assert "local certified bound over l_inf balls of radius 0.02 around " in printed
    assert "certified agreement (argmax proved the same over the ball)" in printed
    report = json.loads((out / "report.json").read_text())
    local = report["local_certificates"]
    assert local["radius"] == 0.02 and local["holds"] and "bound" not in local  # the summary, not the lists
    assert 0 <= local["certified_agreement"] <= 1 and 1 <= local["inputs"] <= local["measured"]
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


def test_a_whole_box_bound_above_the_targets_output_spread_is_reported_as_vacuous():
    from models.report import _whole_bound_words

    c = _construct(tiny_cnn, (2, 8, 8), (-1.0, 1.0))
    check = verify(c, None, samples=30)
    low, high = check.output_range_observed
    assert check.certified_bound > high - low and check.vacuous and check.to_json()["certified_bound_vacuous"]
    report = {"certified_bound": check.certified_bound, "certified_bound_vacuous": True, "output_range_observed": [low, high]}
    words = _whole_bound_words(report)
    assert words.startswith("vacuous (") and f"{high - low:.3g}" in words
    assert _whole_bound_words(dict(report, certified_bound_vacuous=False)) == f"{check.certified_bound:.3g}"
    for n, vacuous in ((3, True), (16, False)):  # at n = 3 the bound is about twice the spread
        c = construct(tiny_mlp(), (5,), (0.0, 1.0), ConstructOptions.from_kwargs(n=n, progress=False, workers=1))
        check = verify(c, None, samples=30)
        spread = check.output_range_observed[1] - check.output_range_observed[0]
        assert (check.certified_bound > spread) == vacuous and check.vacuous == vacuous
