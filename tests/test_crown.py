"""The linear-relaxation bound (models/crown.py): sound on every input tried, at every neuron it
bounds, and tighter than interval propagation; targets it does not handle keep the interval bound."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from models.adversarial import adversarial_search
from models.bounds import IBP_METHOD, certified_bound
from models.construct import ConstructOptions, construct
from models.crown import Relaxation, attach_sums, chain, crown_bound, interval_step
from models.problems import kept_sums
from models.verify import verify

from .nets import chain_cnn, shifted_output, tiny_cnn, tiny_mlp

CASES = {
    "mlp-signed": (tiny_mlp, (5,), (-1.0, 1.0)),
    "mlp-nonneg": (tiny_mlp, (5,), (0.0, 1.0)),
    "cnn-nonneg": (chain_cnn, (1, 8, 8), (0.0, 1.0)),
    "cnn-signed": (chain_cnn, (1, 8, 8), (-1.0, 0.5)),
}


def _build(case, n=3):
    make, shape, domain = CASES[case]
    c = construct(make(), shape, domain, ConstructOptions.from_kwargs(n=n, workers=1, progress=False))
    sums = [kept_sums(spec, s.masks) for spec, s in zip(c.specs, c.solutions)]
    return c, sums


def _inputs(shape, domain, seed=3):
    """Uniform samples, random vertices of the box and its two constant corners."""
    gen = torch.Generator().manual_seed(seed)
    vertices = torch.where(torch.rand((1000, *shape), generator=gen) < 0.5, domain.lo, domain.hi)
    return torch.cat([domain.samples(shape, 3000, seed), vertices]).double()


@pytest.mark.parametrize("case", list(CASES))
def test_bound_holds_on_every_input_tried_and_is_tighter_than_intervals(case):
    c, sums = _build(case)  # n = 3: errors large enough that a wrong bound shows
    per_output = crown_bound(c.folded, c.layers, lambda: sums, c.domain.box(c.input_shape))
    x = _inputs(c.input_shape, c.domain)
    target64 = copy.deepcopy(c.target).double().eval()
    with torch.no_grad():
        observed = (target64(x) - c.pruned(x)).abs().amax(0)
    assert torch.all(observed <= per_output), (observed, per_output)
    adv = adversarial_search(c, target64, None, restarts=8, steps=30)["adversarial_output_error"]
    assert 0 < adv <= float(per_output.max())
    ibp = certified_bound(c.folded, c.layers, [lambda s=s: (s.weight_error, s.bias_error) for s in c.solutions],
                          c.domain.box(c.input_shape))
    assert ibp.method == IBP_METHOD
    assert float(per_output.max()) < 0.9 * ibp.bound
    check = verify(c, None, samples=64, adversarial=4)  # what verify reports: the smaller, per output
    assert check.certified_bound == pytest.approx(min(float(per_output.max()), ibp.bound), rel=1e-6)
    assert "CROWN" in check.bound_method and check.bound_holds


@pytest.mark.parametrize("case", ["mlp-signed", "cnn-nonneg", "cnn-signed"])
def test_every_neuron_bound_holds(case):
    """At each ReLU and max pooling input: the target's value in [l, u] and the pruned network's
    (computed from the kept sums as the pairs do) within delta of it."""
    c, sums = _build(case)
    steps = chain(c.folded, c.layers, c.input_shape)
    attach_sums(steps, c.layers, sums)
    relax = Relaxation(steps, c.domain.box(c.input_shape))
    with torch.no_grad():
        out_shape = tuple(c.folded(torch.zeros((1, *c.input_shape), dtype=torch.float64)).shape[1:])
        relax.run(interval_step, out_shape)
        a = ap = _inputs(c.input_shape, c.domain)
        checked = 0
        for i, step in enumerate(steps):
            if step.kind in ("relu", "maxpool"):
                l, u, delta = relax.bounds[i]  # interval bounds tightened by the backward ones
                assert torch.all(a >= l - 1e-9) and torch.all(a <= u + 1e-9)
                assert torch.all((ap - a).abs() <= delta + 1e-9)
                t, e = relax.neuron_bounds(i, error=False), relax.neuron_bounds(i, error=True)  # backward alone
                assert torch.all(a <= t[0] + 1e-9) and torch.all(-a <= t[1] + 1e-9)
                assert torch.all(ap - a <= e[0] + 1e-9) and torch.all(a - ap <= e[1] + 1e-9)
                checked += 1
            if step.kind == "affine":
                layer = step.layer
                bias_p = (layer.bias if layer.bias is not None else 0) + step.dbias  # the pair's bias b'
                bias_p = bias_p.reshape(-1, *([1] * (a.dim() - 2)))
                s1 = step.sums[1] if len(step.sums) > 1 else step.sums[0]
                ap = layer.apply(ap.clamp(min=0), step.sums[0]) - layer.apply((-ap).clamp(min=0), s1) + bias_p
                a = step.fn(a)
            else:
                a, ap = step.fn(a), step.fn(ap)
        assert checked >= 2
        x = _inputs(c.input_shape, c.domain)
        assert torch.allclose(ap, c.pruned(x), atol=1e-5)  # the simulation is the pruned network


@pytest.mark.parametrize("make, shape", [(tiny_cnn, (2, 8, 8)), (lambda: shifted_output(0.5), (4,))])
def test_graphs_that_are_not_a_chain_keep_interval_propagation(make, shape):
    c = construct(make(), shape, (0.0, 1.0), ConstructOptions.from_kwargs(n=3, workers=1, progress=False))
    assert chain(c.folded, c.layers, shape) is None  # a residual add; a constant added to the output
    check = verify(c, None, samples=32, adversarial=2)
    assert check.bound_method == IBP_METHOD and check.certified_bound == check.interval_bound


@pytest.mark.parametrize("seed", range(4))
def test_each_relaxation_holds_on_samples(seed):
    """relu and max pooling, for the target (lam . phi(z)) and the error (rho . (phi(z + d) - phi(z))):
    the linear bound holds for samples of z in [l, u] and |d| <= delta, windows with and without a
    dominant element, neurons on, off and unstable."""
    from models.relaxations import RELAXATIONS

    gen = torch.Generator().manual_seed(seed)
    shape = (2, 4, 6)
    centre = torch.randn(shape, generator=gen, dtype=torch.float64)
    centre[0, :2, :2] = torch.tensor([[3.0, 0.0], [0.1, -0.2]])  # a dominant window
    l = centre - torch.rand(shape, generator=gen, dtype=torch.float64) * 0.5
    u = centre + torch.rand(shape, generator=gen, dtype=torch.float64) * 0.5
    delta = torch.rand(shape, generator=gen, dtype=torch.float64) * 0.3
    z = l + (u - l) * torch.rand((4000, *shape), generator=gen, dtype=torch.float64)
    z[:500] = torch.where(torch.rand((500, *shape), generator=gen) < 0.5, l, u)  # vertices
    d = delta * (2 * torch.rand((4000, *shape), generator=gen, dtype=torch.float64) - 1)
    d[:500] = torch.where(torch.rand((500, *shape), generator=gen) < 0.5, -delta, delta)
    pool = lambda t: F.max_pool2d(t, 2)  # noqa: E731
    for kind, phi, out in (("relu", torch.relu, shape), ("maxpool", pool, (2, 2, 3))):
        lam = torch.randn((5, *out), generator=gen, dtype=torch.float64)
        for part in ("target", "error"):
            coeffs_of, apply = RELAXATIONS[(kind, part)]
            # one region's coefficients for every functional (a batch of 1), and the same region given
            # per functional among others (the batch gathered by region): the same bound
            lam_in, const = apply(lam, coeffs_of(l[None], u[None], delta[None], 2), shape)
            others = coeffs_of(torch.stack([l - 1, l]), torch.stack([u + 1, u]), torch.stack([delta, delta]), 2)
            again = apply(lam, [t[torch.ones(5, dtype=torch.long)] for t in others], shape)
            assert torch.equal(again[0], lam_in) and torch.equal(again[1], const)
            v = z if part == "target" else d
            value = (lam[None] * (phi(z) if part == "target" else phi(z + d) - phi(z))[:, None]).flatten(2).sum(-1)
            assert torch.all(value <= (lam_in[None] * v[:, None]).flatten(2).sum(-1) + const + 1e-12)


@pytest.mark.parametrize("make, shape", [
    (lambda: torch.nn.Sequential(torch.nn.Linear(6, 4)), (6,)),
    (lambda: torch.nn.Sequential(torch.nn.LayerNorm(6)), (5, 6)),  # its affine part: a diagonal (grouped) map
    (lambda: torch.nn.Sequential(torch.nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=1, groups=2)), (4, 9, 8)),
    (lambda: torch.nn.Sequential(torch.nn.Conv2d(3, 5, (3, 2), stride=(2, 3), padding=(2, 0), dilation=2)), (3, 11, 10)),
])
def test_a_layers_transpose_is_its_adjoint(make, shape):
    """y . apply(x, w) = apply_transposed(y, w) . x for random x, y, w (what the backward passes rely on)."""
    from models.trace import trace_target

    _, (layer,) = trace_target(make().double(), input_nonneg=False)
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(layer.weight.shape, generator=gen, dtype=torch.float64)
    x = torch.randn((3, *shape), generator=gen, dtype=torch.float64)
    out = layer.apply(x, w)
    y = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    back = layer.apply_transposed(y, w, shape)
    assert back.shape == x.shape
    assert torch.allclose((y * out).flatten(1).sum(1), (back * x).flatten(1).sum(1), rtol=1e-12, atol=1e-12)
