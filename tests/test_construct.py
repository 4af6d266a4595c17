"""The construction: observed error <= certified bound, bound shrinks with n, variants agree,
tickets rebuild bit-exactly, conv biases are right at the borders, unsupported ops are named."""

from __future__ import annotations

import operator

import numpy as np
import pytest
import torch

from models.construct import ConstructOptions, construct
from models.errors import UnsupportedModelError
from models.trace import trace_target
from models.masks import as_tensor
from models.report import build_report, eps_coverage, report_markdown
from models.rundir import save_run
from models.ticket import TicketError, rebuild
from models.domain import InputDomain, domain_samples
from models.verify import check_inputs_for, verify
from solver import SolverInputError
from solver.files import sha256_file

from .nets import GatheredTable, ParameterFunction, WithPReLU, WithSin, conv1d_net, dilated_cnn, grouped_cnn, shifted_output, tiny_cnn, tiny_mlp
from .problems import assert_errors_from_masks

CASES = {
    "mlp-signed": (tiny_mlp, (5,), (-1.0, 1.0)),
    "mlp-nonneg": (tiny_mlp, (5,), (0.0, 1.0)),
    "cnn-nonneg": (tiny_cnn, (2, 8, 8), (0.0, 1.0)),
    "cnn-signed": (tiny_cnn, (2, 8, 8), (-0.5, 1.0)),
    "cnn-dilated": (dilated_cnn, (2, 8, 8), (-1.0, 1.0)),
    "cnn-grouped": (grouped_cnn, (2, 8, 8), (-1.0, 1.0)),
    "conv1d": (conv1d_net, (2, 12), (-1.0, 1.0)),
}


def _construct(make, shape, domain, n, variant="fanout", **kw):
    kw.setdefault("workers", 1)
    options = ConstructOptions.from_kwargs(n=n, progress=False, **kw)
    return construct(make(), shape, domain, options, variant)


def _observed_error(c, shape, domain, count=256, seed=11) -> float:
    """max |f(x) - g(x)| in float64 on fresh samples of the box, computed here (not by verify)."""
    x = domain_samples(shape, domain, count, seed).double()
    with torch.no_grad():
        f = c.target.double()(x)
        c.target.float()
        return float((f - c.pruned(x)).abs().max())


@pytest.mark.parametrize("case", list(CASES))
def test_observed_error_within_bound_and_bound_shrinks_with_n(case):
    make, shape, domain = CASES[case]
    bounds = []
    for n in (3, 7, 12):
        c = _construct(make, shape, domain, n)
        check = verify(c, None, samples=256)
        observed = _observed_error(c, shape, domain)
        assert 0 < observed <= check.certified_bound, (n, observed, check)
        assert check.bound_holds and check.max_output_error <= check.certified_bound
        assert check.certified_bound <= check.interval_bound
        bounds.append(check.certified_bound)
    assert bounds[0] > bounds[1] > bounds[2]
    assert bounds[2] < 0.1 * bounds[0]


def test_pruned_network_is_twice_as_deep_and_keeps_parameter_free_ops():
    c = _construct(tiny_cnn, (2, 8, 8), (0.0, 1.0), 4)
    pairs = [m for m in c.pruned.modules() if type(m).__name__ == "TicketPair"]
    assert len(pairs) == len(c.layers) == 4
    assert c.layers[0].folded_bn == "bn1" and c.layers[0].input_nonneg
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in c.pruned.modules())
    nodes = list(c.pruned.graph.nodes)
    modules = [n.target for n in nodes if n.op == "call_module"]
    assert {"pool", "avg", "drop"} <= set(modules)  # the target's own parameter-free modules, in place
    assert any(n.op == "call_function" and n.target is operator.add for n in nodes)  # the residual add
    assert [m for m in modules if m in ("conv1", "conv2", "conv3", "fc")] == ["conv1", "conv2", "conv3", "fc"]


@pytest.mark.parametrize("case", ["mlp-signed", "cnn-signed"])
def test_dense_and_fanout_variants_give_identical_outputs(case):
    make, shape, domain = CASES[case]
    a = _construct(make, shape, domain, 5, "fanout")
    b = _construct(make, shape, domain, 5, "dense")
    x = domain_samples(shape, domain, 64, seed=3)
    with torch.no_grad():
        assert torch.equal(a.pruned(x), b.pruned(x))
    dense_a = [m for m in b.pruned.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    assert any(m.weight_orig.shape[1] > 1 and m.weight_orig.shape[0] > m.weight_orig.shape[1] for m in dense_a)
    for sa, sb in zip(a.solutions, b.solutions):  # same seed -> same random values -> same masks
        for key in sa.masks:
            assert torch.equal(as_tensor(sa.masks[key]), as_tensor(sb.masks[key]))


def test_same_seed_same_network_regardless_of_workers_and_chunks():
    a = _construct(tiny_mlp, (5,), (-1.0, 1.0), 6, workers=None)
    b = _construct(tiny_mlp, (5,), (-1.0, 1.0), 6, workers=1, chunk_size=7)
    x = domain_samples((5,), (-1.0, 1.0), 32, seed=1)
    with torch.no_grad():
        assert torch.equal(a.pruned(x), b.pruned(x))
    c = _construct(tiny_mlp, (5,), (-1.0, 1.0), 6, seed=1)
    with torch.no_grad():
        assert not torch.equal(a.pruned(x), c.pruned(x))


def test_conv_bias_is_exact_at_the_borders():
    """A zero input makes every output pixel equal the bias; padding must not lose it."""
    torch.manual_seed(0)
    conv = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 5, padding=2)).eval()
    c = construct(conv, (1, 7, 7), (0.0, 1.0), ConstructOptions.from_kwargs(n=16, workers=1, progress=False))
    with torch.no_grad():
        out = c.pruned.double()(torch.zeros(1, 1, 7, 7, dtype=torch.float64))
        c.pruned.float()
    bias = conv[0].bias.double().reshape(1, 2, 1, 1)
    err = (out - bias).abs()
    assert err.max() <= float(c.solutions[0].bias_error.max()) + 1e-6
    assert err[..., 0, 0].max() <= 1e-3 and err[..., -1, -1].max() <= 1e-3  # corners
    assert c.specs[0].const_tap == (2, 2)


def test_ticket_rebuilds_bit_exactly(tmp_path):
    target = tiny_cnn()
    path = tmp_path / "t.pt"
    torch.save(target.state_dict(), path)
    c = construct(target, (2, 8, 8), (0.0, 1.0), ConstructOptions.from_kwargs(n=5, workers=1, progress=False))
    check = verify(c, None, samples=64)
    report = build_report(c, check, target_desc={"name": "tiny", "arch": "module:tests.nets:TinyCNN",
                                                 "sha256": sha256_file(path)}, data_spec=None, total_seconds=1.0)
    inputs = check_inputs_for(None, (2, 8, 8), InputDomain(0.0, 1.0), 0)
    out = tmp_path / "run"
    save_run(out, c, report, path, {"x": 1}, inputs, export=True)
    ticket = torch.load(out / "ticket.pt", weights_only=True)
    from models.target import load_target

    rebuilt = rebuild(ticket, load_target(out / ticket["target"]["file"], "module:tests.nets:TinyCNN")).pruned
    with torch.no_grad():
        assert torch.equal(rebuilt(inputs), c.pruned(inputs))
        assert torch.equal(rebuilt(inputs), ticket["check"]["outputs"])
        exported = torch.export.load(str(out / "pruned.pt2")).module()
        assert torch.equal(exported(inputs), c.pruned(inputs))
        assert torch.equal(exported(inputs[:5]), c.pruned(inputs[:5]))
    plain = torch.load(out / "pruned_state_dict.pt", weights_only=True)
    assert not any(k.endswith("_mask") or k.endswith("_orig") for k in plain)
    kept = sum(int((v != 0).sum()) for k, v in plain.items() if "weight" in k or "bias" in k)
    assert kept <= report["kept_params"]


def test_prelu_is_constructed_single_and_per_channel():
    """Each PReLU weight is a target weight with its own pair (a diagonal one on relu(-x)); the
    folded trace computes the model exactly and the ticket follows it within the weight errors."""
    from models.report import unconstructed

    torch.manual_seed(0)
    model = WithPReLU().eval()
    options = ConstructOptions.from_kwargs(n=12, progress=False, eps=0.01, workers=1)
    c = construct(model, (2, 4, 4), (-1.0, 1.0), options)
    assert {"act", "act1"} <= {layer.name for layer in c.layers} and not unconstructed(c)
    x = torch.rand(64, 2, 4, 4, dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(c.folded(x), model.double()(x))
        model.float()
        assert float((c.folded(x) - c.pruned(x)).abs().max()) < 0.05
    assert verify(c, None, samples=32, adversarial=0).bound_holds is not False


@pytest.mark.parametrize("net, match", [
    (WithSin, r"unsupported function sin"),
    (GatheredTable, r"parameter 'table' is read through an index buffer .* no rule for a gathered parameter"),
    (ParameterFunction, r"unsupported function logsumexp .*: no input reaches it, it computes a constant from the "
                        r"parameters and buffers \['coords', 'mlp'\]; there is no rule for a function of parameters"),
])
def test_unsupported_ops_are_named(net, match):
    with pytest.raises(UnsupportedModelError, match=match):
        trace_target(net(), input_nonneg=False)


@pytest.mark.parametrize("domain", [(-1.0, 1.0), (0.0, 1.0)])
def test_grouped_and_depthwise_convolutions_keep_their_groups(domain, tmp_path):
    """Each conv group gets its own units and constant units; B is a grouped conv; the errors from
    the masks are the solver's; dense and fan-out variants agree; the ticket rebuilds bit-exactly."""
    from models.problems import errors_from_masks

    c = _construct(grouped_cnn, (2, 8, 8), domain, 5)
    assert [s.groups for s in c.specs] == [1, 2, 6, 1]
    pairs = {m.spec_name: m for m in c.pruned.modules() if type(m).__name__ == "TicketPair"}
    for spec in c.specs:
        if spec.groups > 1:
            combine = pairs[spec.name].combine
            assert combine.groups == spec.groups and combine.weight_mask.shape[1] == spec.hidden_group
            assert spec.hidden == spec.groups * (spec.in_group * spec.units_per_input + spec.n_const)
    for layer, spec, sol in zip(c.layers, c.specs, c.solutions):
        we, be = errors_from_masks(layer, spec, sol.masks)
        assert np.allclose(we, sol.weight_error, atol=1e-12) and we.shape == tuple(layer.weight.shape)
        if be is not None:
            assert np.allclose(be, sol.bias_error, atol=1e-12)
    check = verify(c, None, samples=256, adversarial=4)
    assert check.bound_holds and 0 < _observed_error(c, (2, 8, 8), domain) <= check.certified_bound
    dense = _construct(grouped_cnn, (2, 8, 8), domain, 5, "dense")
    x = domain_samples((2, 8, 8), domain, 32, seed=3)
    with torch.no_grad():
        assert torch.equal(c.pruned(x), dense.pruned(x))


def test_options_are_validated():
    with pytest.raises(SolverInputError, match=r"`n` must be an int in the range \[1, inf\); got 0 instead"):
        _construct(tiny_mlp, (5,), (0.0, 1.0), 0)
    with pytest.raises(SolverInputError, match=r"`scale_policy` must be one of \['max', 'rms'\]; got 'mean'"):
        ConstructOptions(scale_policy="mean")
    with pytest.raises(SolverInputError, match=r"unknown option\(s\) \['nn'\]"):
        ConstructOptions.from_kwargs(nn=3)


def test_min_size_misses_eps_exactly_where_no_subset_fits():
    """Every weight is within eps except those the exact min-error optimum cannot bring within eps:
    the min-size fallbacks are the weights no subset reaches (same seed: same random values)."""
    eps = 0.02
    small = _construct(tiny_mlp, (5,), (-1.0, 1.0), 5, objective="min-size", eps=eps, backend="mitm")
    closest = _construct(tiny_mlp, (5,), (-1.0, 1.0), 5, objective="min-error", backend="mitm")
    misses = 0
    for a, b in zip(small.solutions, closest.solutions):
        miss = a.errors() > eps
        assert np.array_equal(miss, b.errors() > eps)
        assert np.all(b.errors() <= a.errors() + 1e-12)  # min-error is never worse
        assert np.allclose(a.errors()[miss], b.errors()[miss], rtol=0, atol=1e-12)  # a fallback is the min-error subset
        misses += int((a.errors() > eps).sum())
        assert (a.status_counts["infeasible"] > 0) == bool((a.errors() > eps).any())
    assert misses > 0  # n = 5 leaves some weights out of reach: the fallback path is exercised
    coverage = eps_coverage(small)
    assert coverage["weights_missing_eps"] == misses
    assert coverage["weights_within_eps"] + misses == sum(layer.num_params() for layer in small.layers)
    worst = coverage["worst_missing"][0]
    layer = next(layer for layer in small.layers if layer.name == worst["layer"])
    sol = small.solutions[small.layers.index(layer)]
    errors = sol.weight_error if worst["param"] == "weight" else sol.bias_error
    assert worst["error"] == max(s.errors().max() for s in small.solutions) == errors[tuple(worst["index"])]
    assert worst["target"] == float(getattr(layer, worst["param"])[tuple(worst["index"])])
    assert verify(small, None, samples=64).bound_holds


def test_paper_layout_draws_everything_uniform_with_random_group_sizes():
    c = _construct(tiny_mlp, (5,), (-1.0, 1.0), 8, layout="paper")
    from models.random_net import generate

    for spec in c.specs:
        assert spec.scale == 1.0 and spec.units_per_input == 16
        u = generate(spec)["u"]
        assert u.abs().max() <= 1.0 and (u > 0).sum(dim=1).unique().numel() > 1  # group sizes vary
    assert _observed_error(c, (5,), (-1.0, 1.0)) <= verify(c, None, samples=64).certified_bound


def test_rms_scale_policy_scales_by_the_root_mean_square():
    c = _construct(tiny_mlp, (5,), (-1.0, 1.0), 6, scale_policy="rms")
    for layer, spec in zip(c.layers, c.specs):
        values = torch.cat([layer.weight64().reshape(-1)] + ([layer.bias] if layer.bias is not None else []))
        assert spec.scale == pytest.approx(5.0 * float(values.pow(2).mean().sqrt()), rel=1e-12)
    d = _construct(tiny_mlp, (5,), (-1.0, 1.0), 6, scale_policy="rms", scale_margin=2.0)
    assert [s.scale for s in d.specs] == pytest.approx([0.4 * s.scale for s in c.specs], rel=1e-12)


def test_bound_shifts_the_interval_not_the_error_when_a_constant_is_added():
    a = _construct(lambda: shifted_output(0.0), (4,), (-1.0, 1.0), 6)
    b = _construct(lambda: shifted_output(100.0), (4,), (-1.0, 1.0), 6)
    bound_a = verify(a, None, samples=64).certified_bound
    check_b = verify(b, None, samples=64)
    assert check_b.bound_holds
    assert check_b.certified_bound == pytest.approx(bound_a, abs=1e-6)  # not 100 more


def test_rebuild_refuses_a_ticket_that_does_not_fit(tmp_path):
    c = _construct(tiny_mlp, (5,), (0.0, 1.0), 3)
    from models.ticket import ticket_dict

    desc = {"name": "t", "arch": "mlp", "file": "target.pt", "sha256": "0" * 64}
    ticket = ticket_dict(c, desc, check_inputs_for(None, (5,), InputDomain(0.0, 1.0), 0))
    with pytest.raises(TicketError, match=r"tampered with: format must be 'lottery-ticket'; got 'zip'"):
        rebuild(dict(ticket, format="zip"), tiny_mlp())
    with pytest.raises(TicketError, match=r"the ticket's layers \['fc1', 'fc2', 'fc3'\] do not match the target's \['0'"):
        rebuild(ticket, torch.nn.Sequential(torch.nn.Linear(5, 2)))
    assert torch.equal(rebuild(ticket, tiny_mlp()).pruned(ticket["check"]["inputs"]), ticket["check"]["outputs"])


def test_errors_recomputed_from_masks_match_solver_errors():
    assert_errors_from_masks(_construct(tiny_cnn, (2, 8, 8), (-1.0, 1.0), 6))


def test_masks_are_bool_and_convert_to_torch_prune_and_plain():
    from torch.nn.utils import prune

    from models.pruned import MaskedLinear, to_plain, to_torch_prune

    c = _construct(tiny_cnn, (2, 8, 8), (-1.0, 1.0), 4, variant="dense")
    masked = [m for m in c.pruned.modules() if hasattr(m, "weight_mask")]
    assert masked and all(m.weight_mask.dtype == torch.bool for m in masked)
    x = domain_samples((2, 8, 8), (-1.0, 1.0), 16, seed=0)
    torch_pruned = to_torch_prune(c.pruned)
    plain = to_plain(c.pruned)
    assert not any(isinstance(m, MaskedLinear) for m in plain.modules())
    with torch.no_grad():
        ref = c.pruned(x)
        assert torch.equal(torch_pruned(x), ref)
        assert torch.equal(plain(x), ref)
    for m in torch_pruned.modules():
        if prune.is_pruned(m) and isinstance(m, torch.nn.Linear):
            prune.remove(m, "weight")
            break
    with torch.no_grad():
        assert torch.equal(torch_pruned(x), ref)


@pytest.mark.parametrize("domain", [(0.0, 1.0), (-1.0, 1.0)])
def test_balanced_layout_gives_every_weight_both_signs_in_equal_numbers(domain):
    from models.problems import bias_coefficients, build_problems, coefficients
    from models.random_net import generate, groups

    n = 7
    c = _construct(tiny_mlp, (5,), domain, n)
    assert c.options.layout == "balanced"
    for layer, spec in zip(c.layers, c.specs):
        values = generate(spec)
        C = coefficients(spec, values, slice(0, spec.d_out))  # (d_out, d_in, 1, 1, upi)
        for member in groups(spec, values["u"]):
            signs = torch.sign(C[..., member[0]])  # every input has the same group layout
            assert torch.all((signs > 0).sum(-1) == 4) and torch.all((signs < 0).sum(-1) == 3)
        if spec.has_bias:
            b = torch.sign(bias_coefficients(spec, values, slice(0, spec.d_out)))
            assert torch.all((b > 0).sum(-1) == 4) and torch.all((b < 0).sum(-1) == 3)
        _, coeffs, lengths, _ = build_problems(layer, spec, values)
        assert np.all(lengths == n)
    # the old layout is kept, under its own name, and its products' signs are random
    old = _construct(tiny_mlp, (5,), domain, n, layout="fixed-sign")
    spec = old.specs[1]
    signs = torch.sign(coefficients(spec, generate(spec), slice(0, spec.d_out)))
    assert (signs > 0).sum(-1).unique().numel() > 1


@pytest.mark.parametrize("case", ["mlp-signed", "cnn-nonneg"])
def test_adversarial_search_finds_a_witness_between_observed_and_certified(case):
    make, shape, domain = CASES[case]
    c = _construct(make, shape, domain, 4)
    check = verify(c, None, samples=64)
    adv = check.adversarial_output_error
    assert check.max_output_error <= adv <= check.certified_bound  # it starts from the worst sample
    x = check.witness
    assert x.shape == (1, *shape) and float(x.min()) >= domain[0] and float(x.max()) <= domain[1]
    with torch.no_grad():
        again = float((c.target.double()(x.double()) - c.pruned(x.double())).abs().max())
        c.target.float()
    assert again == pytest.approx(adv, rel=1e-12)  # the witness reproduces the error (batching: last bits)
    assert verify(c, None, samples=64, adversarial=0).adversarial_output_error is None


@pytest.mark.parametrize("layout", ["balanced", "fixed-sign", "paper"])
@pytest.mark.parametrize("kind, kernel, nonneg", [("linear", (1, 1), True), ("conv2d", (3, 3), False)])
def test_random_values_for_n_are_a_prefix_of_those_for_n_plus_one(layout, kind, kernel, nonneg):
    """What `--n auto` relies on: adding a unit to every group changes none of the units there were."""
    from dataclasses import replace

    from models.random_net import LayerSpec, generate

    small = LayerSpec("l", kind, 3, 4, kernel, (1, 1), (0, 0), (1, 1), 4, layout, nonneg, True, 1.5, 7)
    big = replace(small, n=5)
    a, b = generate(small, dense=True), generate(big, dense=True)
    ua, ub = small.units_per_input, big.units_per_input
    for g in range(ua // small.n):
        for j in range(small.n):
            ka, kb = g * small.n + j, g * big.n + j
            assert torch.equal(a["u"][:, ka], b["u"][:, kb])
            ia, ib = torch.arange(3) * ua + ka, torch.arange(3) * ub + kb
            assert torch.equal(a["B"][:, ia], b["B"][:, ib]) and torch.equal(a["A"][ia], b["A"][ib])
            assert torch.equal(a["a_bias"][ia], b["a_bias"][ib])
    const_a, const_b = a["B"][:, 3 * ua:], b["B"][:, 3 * ub:]
    assert torch.equal(const_a, const_b[:, :small.n]) and torch.equal(a["A"][3 * ua:], b["A"][3 * ub:3 * ub + small.n])
    assert torch.equal(a["a_bias"][3 * ua:], b["a_bias"][3 * ub:3 * ub + small.n])
    assert torch.equal(a["b_bias"], b["b_bias"])
    assert not torch.equal(a["B"][:, :ua], a["B"][:, ua:2 * ua])  # the inputs' units are not copies


@pytest.mark.parametrize("objective", ["min-error", "min-size"])
def test_n_auto_picks_per_layer_the_smallest_n_with_every_weight_within_eps(objective):
    eps = 0.02
    c = _construct(tiny_cnn, (2, 8, 8), (-1.0, 1.0), "auto", objective=objective, eps=eps, block_problems=50)
    chosen = [spec.n for spec in c.specs]
    assert all(s.n_search["reached"] for s in c.solutions) and len(set(chosen)) > 1, chosen
    for sol in c.solutions:
        assert sol.errors().max() <= eps
        steps = sol.n_search["steps"]
        assert [t["n"] for t in steps] == list(range(1, sol.n_search["n"] + 1))
        assert steps[-1]["missing"] == 0 and all(t["missing"] > 0 for t in steps[:-1])
        assert all(a["missing"] == b["solved"] for a, b in zip(steps, steps[1:]))  # only the misses re-solved
    # each layer's n is the smallest: one fewer coefficient leaves that layer with misses, exactly
    # as many as the search counted (fixed n, the full min-error solve of every problem)
    for i, n in enumerate(chosen):
        fixed = _construct(tiny_cnn, (2, 8, 8), (-1.0, 1.0), n - 1, eps=eps)
        sol = fixed.solutions[i]
        assert (sol.errors() > eps).any()
        per_weight_groups = 1 if fixed.specs[i].input_nonneg else 2
        assert c.solutions[i].n_search["steps"][n - 2]["missing"] >= (sol.errors() > eps).sum()
        assert c.solutions[i].n_search["steps"][n - 2]["missing"] <= per_weight_groups * (sol.errors() > eps).sum()


def test_n_auto_from_n_min_keeps_n_min_wherever_it_suffices(monkeypatch):
    """n_min = 21 is the paper's n unless a weight misses eps there: each layer's n is
    max(n_min, the smallest n within eps), the search starts at n_min, and a layer within eps at
    n_min is the plain n_min construction's, solved once (the search's answers cover its blocks)."""
    import solver

    eps = 0.02
    free = _construct(tiny_cnn, (2, 8, 8), (-1.0, 1.0), "auto", eps=eps, block_problems=50)
    chosen = [spec.n for spec in free.specs]
    n_min = sorted(chosen)[len(chosen) // 2]
    solved, real = [0], solver.solve
    monkeypatch.setattr(solver, "solve", lambda targets, *a, **kw: solved.__setitem__(0, solved[0] + len(targets))
                        or real(targets, *a, **kw))
    c = _construct(tiny_cnn, (2, 8, 8), (-1.0, 1.0), "auto", eps=eps, block_problems=50, n_min=n_min)
    monkeypatch.undo()
    searched = sum(t["solved"] for s in c.solutions for t in s.n_search["steps"])
    assert solved[0] == searched + sum(s.problems - s.n_search["reused"] for s in c.solutions)
    fixed = _construct(tiny_cnn, (2, 8, 8), (-1.0, 1.0), n_min, eps=eps)
    assert [spec.n for spec in c.specs] == [max(n_min, n) for n in chosen]
    for i, sol in enumerate(c.solutions):
        assert sol.n_search["steps"][0]["n"] == n_min and sol.errors().max() <= eps
        if chosen[i] <= n_min:
            assert all(torch.equal(as_tensor(sol.masks[k]), as_tensor(fixed.solutions[i].masks[k])) for k in sol.masks)
    report = build_report(c, verify(c, None, samples=8, adversarial=0), target_desc={"name": "tiny"}, data_spec=None,
                          total_seconds=1.0)
    assert report["n_min"] == n_min and f"from {n_min} to 32" in report_markdown(report)
    with pytest.raises(SolverInputError, match="`n_min` must be <= `n_max`; got n_min=9, n_max=8"):
        ConstructOptions.from_kwargs(n="auto", eps=0.1, n_min=9, n_max=8)


def test_n_auto_stops_at_n_max_and_reports_the_misses():
    c = _construct(tiny_mlp, (5,), (0.0, 1.0), "auto", eps=1e-6, n_max=3)
    assert all(s.n_search == {**s.n_search, "n": 3, "reached": False} for s in c.solutions)
    assert [spec.n for spec in c.specs] == [3] * len(c.specs)
    check = verify(c, None, samples=16)
    report = build_report(c, check, target_desc={"name": "tiny"}, data_spec=None, total_seconds=1.0)
    assert report["n"] == "auto" and report["n_max"] == 3 and report["weights_missing_eps"] > 0
    assert [row["n"] for row in report["layers"]] == [3] * len(c.specs)
    th = report["n_theorem"]
    assert th["d"] == 6 and th["l"] == len(c.specs) and th["log2_d_l_over_eps"] == pytest.approx(np.log2(6 * th["l"] / 1e-6))


def test_n_auto_needs_eps():
    with pytest.raises(SolverInputError, match="`n='auto'` needs `eps`"):
        ConstructOptions.from_kwargs(n="auto")
    with pytest.raises(SolverInputError, match=r"`n` must be an int or one of \['auto'\]; got 'autox'"):
        ConstructOptions.from_kwargs(n="autox", eps=0.1)


@pytest.mark.parametrize("make, shape, domain", [
    ("Activations", (5,), (-1.0, 1.0)),
    ("Activations", (5,), (0.0, 1.0)),
    ("AdaptivePoolCNN", (2, 6, 6), (-1.0, 1.0)),
])
def test_kept_activations_softmax_and_adaptive_pooling(make, shape, domain):
    """Every activation with a bound rule stays the target's own op; the bound holds against the
    observed and the adversarial error."""
    from . import nets

    torch.manual_seed(0)
    c = _construct(lambda: getattr(nets, make)().eval(), shape, domain, 6)
    ops = {n.target for n in c.pruned.graph.nodes if n.op in ("call_function", "call_method")}
    assert c.pruned.graph is not None and len(c.layers) == (5 if make == "Activations" else 2)
    check = verify(c, None, samples=512, adversarial=8)
    observed = _observed_error(c, shape, domain)
    assert 0 < observed <= check.certified_bound
    assert check.bound_holds and check.adversarial_output_error <= check.certified_bound
    assert ops  # the functional activations are still in the pruned graph
    with torch.no_grad():  # the pruned network keeps the activations: same output as the target up to the errors
        x = domain_samples(shape, domain, 8, 1)
        assert torch.allclose(c.pruned(x).double(), c.target.double()(x.double()), atol=check.certified_bound)


@pytest.mark.parametrize("seed", range(3))
def test_each_activation_rule_holds(seed):
    """For every rule: phi([lo, hi]) inside the image, |phi(a) - phi(b)| <= L |a - b|; softmax likewise."""
    import torch.fx as fx

    from models.rules import activation_of as elementwise, softmax_bounds

    from .nets import Activations

    gm = fx.symbolic_trace(Activations().double())
    modules = dict(gm.named_modules())
    rules = [r for r in (elementwise(n, modules) for n in gm.graph.nodes
                         if n.op in ("call_module", "call_function", "call_method")) if r is not None]
    assert len(rules) == 15  # module and functional forms of one op share its rule
    assert {r.name for r in rules} == {"gelu", "gelu tanh", "silu", "hardswish", "leaky_relu", "mish", "tanh", "sigmoid",
                                       "relu6", "elu", "softplus", "hardtanh", "hardsigmoid"}
    gen = torch.Generator().manual_seed(seed)
    centre = 4 * torch.randn(2000, generator=gen, dtype=torch.float64)
    centre[:100] = torch.linspace(-2, 0, 100, dtype=torch.float64)  # intervals around every valley
    lo = centre - torch.rand(2000, generator=gen, dtype=torch.float64)
    hi = centre + torch.rand(2000, generator=gen, dtype=torch.float64)
    for rule in rules:
        low, high = rule.image(lo, hi)
        for t in torch.linspace(0, 1, 41, dtype=torch.float64):
            a = lo + t * (hi - lo)
            assert torch.all(rule.fn(a) >= low - 1e-12) and torch.all(rule.fn(a) <= high + 1e-12), rule.name
        a = 6 * torch.randn(5000, generator=gen, dtype=torch.float64)
        b = a + 0.01 * torch.randn(5000, generator=gen, dtype=torch.float64)
        assert torch.all((rule.fn(a) - rule.fn(b)).abs() <= rule.lipschitz * (a - b).abs() + 1e-12), rule.name
        assert float(rule.fn(a).max() - rule.fn(a).min()) <= rule.span, rule.name
    lo = torch.randn((50, 6), generator=gen, dtype=torch.float64)
    hi = lo + torch.rand((50, 6), generator=gen, dtype=torch.float64)
    delta = 0.05 * torch.rand((50, 6), generator=gen, dtype=torch.float64)
    low, high, d = softmax_bounds(lo, hi, delta, 1)
    for _ in range(200):
        a = lo + (hi - lo) * torch.rand((50, 6), generator=gen, dtype=torch.float64)
        b = a + delta * (2 * torch.rand((50, 6), generator=gen, dtype=torch.float64) - 1)
        p = torch.softmax(a, 1)
        assert torch.all(p >= low - 1e-12) and torch.all(p <= high + 1e-12)
        assert torch.all((p - torch.softmax(b, 1)).abs() <= d + 1e-12)


@pytest.mark.parametrize("make, shape, domain", [
    ("OptionAShortcut", (3, 8, 8), (0.0, 1.0)),
    ("Arithmetic", (4,), (-1.0, 1.0)),
])
def test_slicing_padding_and_arithmetic_between_activations(make, shape, domain):
    from . import nets

    torch.manual_seed(0)
    net = getattr(nets, make)()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    c = _construct(lambda: net.eval(), shape, domain, 6)
    check = verify(c, None, samples=512, adversarial=8)
    observed = _observed_error(c, shape, domain)
    assert 0 < observed <= check.certified_bound
    assert check.bound_holds and check.adversarial_output_error <= check.certified_bound
    if make == "OptionAShortcut":  # the shortcut's zero channels keep conv2's input non-negative
        assert [layer.input_nonneg for layer in c.layers] == [True, True, True]


@pytest.mark.parametrize("make, match", [
    ("BatchIndexing", r"getitem: indexing must keep the batch dimension whole"),
    ("BatchCat", r"cat: cat over dim 0 would mix the batch dimension"),
])
def test_ops_that_mix_the_batch_dimension_are_refused(make, match):
    from . import nets

    with pytest.raises(UnsupportedModelError, match=match):
        trace_target(getattr(nets, make)(), input_nonneg=False)


@pytest.mark.parametrize("kind", ["sub", "mul", "mul-const", "div", "neg", "rsub"])
def test_each_arithmetic_rule_holds(kind):
    """For a and b in their intervals and a', b' within delta of them: the op's value in the interval
    the rule gives, and the pruned-side value within its delta."""
    from models.rules import Bound, rule_named

    gen = torch.Generator().manual_seed(5)

    def stacked():
        lo = torch.randn((1, 40), generator=gen, dtype=torch.float64)
        hi = lo + torch.rand((1, 40), generator=gen, dtype=torch.float64)
        return torch.cat([lo, hi, 0.2 * torch.rand((1, 40), generator=gen, dtype=torch.float64)])

    A, B = stacked(), stacked()
    args = {"sub": (A, B), "mul": (A, B), "mul-const": (A, -1.7), "div": (A, -3.0), "neg": (A,), "rsub": (2.0, B)}[kind]
    op = {"sub": lambda a, b: a - b, "mul": lambda a, b: a * b, "mul-const": lambda a, b: a * b,
          "div": lambda a, b: a / b, "neg": lambda a: -a, "rsub": lambda a, b: a - b}[kind]
    b = rule_named({"mul-const": "mul", "rsub": "sub"}.get(kind, kind)).interval(
        None, tuple(Bound(*x) if isinstance(x, torch.Tensor) else x for x in args), {})
    out = torch.stack(torch.broadcast_tensors(b.lo, b.hi, b.delta))
    for _ in range(300):
        vals, pruned = [], []
        for x in args:
            if isinstance(x, torch.Tensor):
                v = x[0] + (x[1] - x[0]) * torch.rand(40, generator=gen, dtype=torch.float64)
                vals.append(v)
                pruned.append(v + x[2] * (2 * torch.rand(40, generator=gen, dtype=torch.float64) - 1))
            else:
                vals.append(x)
                pruned.append(x)
        y, y2 = op(*vals), op(*pruned)
        assert torch.all(y >= out[0] - 1e-12) and torch.all(y <= out[1] + 1e-12)
        assert torch.all((y - y2).abs() <= out[2] + 1e-12)


def test_large_data_errors_in_float64_on_the_worst_and_a_random_part(monkeypatch):
    import copy

    import models.verify as verify_module
    from models.data import Dataset

    from models.collapsed import collapse

    monkeypatch.setattr(verify_module, "FLOAT64_SECONDS", 0.0)  # as many float64 inputs as the fewest allowed
    monkeypatch.setattr(verify_module, "MIN_FLOAT64_INPUTS", 64)
    c = _construct(tiny_cnn, (2, 8, 8), (0.0, 1.0), 4)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((2000, 2, 8, 8), generator=gen)
    data = Dataset("random", x, torch.randint(0, 3, (2000,), generator=gen), (0.0, 1.0))
    check = verify(c, data, adversarial=0)
    assert check.count == 2000 and check.float64_inputs == 64
    assert "errors in float64 on 64 of its 2000 inputs (32 with the largest float32 errors" in check.measured_on
    collapsed = collapse(c.folded, c.layers, verify_module.kept(c))  # accuracy and agreement: float32 here
    with torch.no_grad():
        f32, g32 = copy.deepcopy(c.target).float()(x), copy.deepcopy(collapsed).float()(x)
        f64, g64 = copy.deepcopy(c.target).double()(x.double()), c.pruned(x.double())
    assert check.accuracy["pruned"] == float((g32.argmax(1) == data.y).double().mean())
    assert check.agreement == float((f32.argmax(1) == g32.argmax(1)).double().mean())
    # near ties: the target's top-2 margin within twice the largest error; every disagreement is one
    top2 = f32.topk(2, dim=1).values
    near = (top2[:, 0] - top2[:, 1]) <= 2 * max(check.max_output_error, float((f32 - g32).abs().max()))
    assert check.near_ties == int(near.sum()) and bool(near[f32.argmax(1) != g32.argmax(1)].all())
    err64 = (f64 - g64).abs().amax(1)
    worst32 = int((f32 - g32).abs().amax(1).argmax())
    assert err64[worst32] <= check.max_output_error <= float(err64.max())
    assert check.max_output_error >= float(err64.topk(32).values[-1]) * 0.5  # near the worst in float64


def test_unconstructed_params_are_counted_and_named():
    from models.report import unconstructed

    c = _construct(tiny_cnn, (2, 8, 8), (0.0, 1.0), 3)  # BatchNorm folded: constructed too
    assert unconstructed(c) == []

    def with_spare():
        net = tiny_mlp()
        net.spare = torch.nn.Parameter(torch.zeros(3))  # a parameter no pair replaces
        return net

    c = _construct(with_spare, (5,), (0.0, 1.0), 3)
    assert unconstructed(c) == ["spare"]
    report = build_report(c, verify(c, None, samples=8, adversarial=0), target_desc={"name": "t"}, data_spec=None,
                          total_seconds=1.0)
    assert report["unconstructed_params"] == 1 and report["unconstructed_param_names"] == ["spare"]


def test_float64_inputs_and_adversarial_search_are_planned_by_time(monkeypatch):
    """When float64 forwards over every sample would exceed the time planned for them, the errors are
    measured in float64 on a subset (said in the check) and the adversarial search is shortened."""
    import models.verify as verify_module

    c = _construct(tiny_cnn, (2, 8, 8), (0.0, 1.0), 4)
    full = verify(c, None, samples=200, adversarial=4)
    assert full.float64_inputs == 202 and full.measured_on is None
    monkeypatch.setattr(verify_module, "FLOAT64_SECONDS", 0.0)
    monkeypatch.setattr(verify_module, "ADVERSARIAL_SECONDS", 0.0)
    check = verify(c, None, samples=200, adversarial=4)
    assert check.count == 202 and check.float64_inputs == verify_module.MIN_FLOAT64_INPUTS
    assert check.measured_on.startswith(f"errors in float64 on {verify_module.MIN_FLOAT64_INPUTS} of its 202")
    assert check.adversarial["steps"] == 5 and check.adversarial["starts"] >= 2
    assert check.max_output_error <= full.max_output_error and check.bound_holds
    assert check.agreement == full.agreement  # on every input, in float32 here


@pytest.mark.parametrize("case", ["mlp-signed", "cnn-signed"])
def test_large_masked_layers_cast_a_block_of_rows_at_a_time(case, monkeypatch):
    """Beyond CAST_BLOCK weights a masked layer forms weight * mask a block of output rows at a time:
    the same outputs, in float32 and in float64."""
    import models.pruned as pruned

    make, shape, domain = CASES[case]
    c = _construct(make, shape, domain, 5)
    x = domain_samples(shape, domain, 16, 2)
    with torch.no_grad():
        want32, want64 = c.pruned(x), c.pruned(x.double())
        calls = []
        original = pruned._row_blocks
        monkeypatch.setattr(pruned, "_row_blocks", lambda *a: calls.append(a) or original(*a))
        monkeypatch.setattr(pruned, "CAST_BLOCK", 7)
        got32, got64 = c.pruned(x), c.pruned(x.double())
    assert calls and any(len(original(*a)) > 1 for a in calls)
    assert torch.allclose(got32, want32, rtol=1e-5, atol=1e-6) and torch.allclose(got64, want64, rtol=0, atol=1e-12)


def test_conv1d_is_a_conv2d_with_a_one_row_kernel():
    c = _construct(conv1d_net, (2, 12), (-1.0, 1.0), 21)
    assert [(layer.kind, layer.kernel, layer.groups) for layer in c.layers] == [
        ("conv2d", (1, 3), 1), ("conv2d", (1, 3), 2), ("linear", (1, 1), 1)]
    assert c.layers[1].conv["stride"] == (1, 2) and c.layers[1].conv["dilation"] == (1, 2)
    x = domain_samples((2, 12), (-1.0, 1.0), 64, 1).double()
    with torch.no_grad():
        f = c.target.double()(x)
        assert torch.allclose(c.folded(x), f, atol=1e-12)
        assert float((f - c.pruned(x)).abs().max()) <= 1e-3 * float(f.abs().max())
    check = verify(c, None, samples=64, adversarial=2)
    assert check.bound_holds and "linear relaxation" in check.bound_method


@pytest.mark.parametrize("case", ["mlp-signed", "cnn-signed"])
@pytest.mark.parametrize("block", [None, 7])
def test_input_gradient_keeps_no_weight_products(case, block, monkeypatch):
    """The adversarial search's gradient (input only) through the pruned network equals plain
    autograd's, while what the graph saves is the layers' inputs, not their weight * mask (whole,
    or block by block beyond CAST_BLOCK)."""
    import models.pruned as pruned

    if block:
        monkeypatch.setattr(pruned, "CAST_BLOCK", block)
    make, shape, domain = CASES[case]
    c = _construct(make, shape, domain, 5)
    x = domain_samples(shape, domain, 3, 3).requires_grad_(True)
    masked = [m for m in c.pruned.modules() if isinstance(m, pruned.MaskedLinear | pruned.MaskedConv2d)]
    plain = pruned.to_plain(c.pruned)  # plain layers holding weight * mask, with gradients: plain autograd

    def gradient(net, weights_too: bool):
        for p in net.parameters():
            p.requires_grad_(weights_too)
        saved = {}  # bytes the forward pass keeps for the backward pass, each tensor once
        with torch.autograd.graph.saved_tensors_hooks(lambda t: (saved.setdefault(t.data_ptr(), t.nbytes), t)[1],
                                                      lambda t: t):
            y = net(x).square().sum()
        (g,) = torch.autograd.grad(y, x)
        return g, sum(saved.values())

    grad, saved = gradient(c.pruned, False)
    want, saved_plain = gradient(plain, True)  # plain autograd keeps the products for the weights' gradients
    assert masked and saved_plain - saved >= sum(4 * m.weight_mask.numel() for m in masked)
    assert torch.allclose(grad, want, rtol=1e-5, atol=1e-6)


def test_fixed_masks_keeps_products_within_its_allowance():
    import models.pruned as pruned

    c = _construct(*CASES["cnn-signed"][:3], 5)
    x = domain_samples(CASES["cnn-signed"][1], CASES["cnn-signed"][2], 4, 1)
    masked = [m for m in c.pruned.modules() if isinstance(m, pruned._Masked)]
    sizes = [m.weight_mask.numel() * 4 + m.bias_mask.numel() * 4 for m in masked]
    with torch.no_grad():
        want = c.pruned(x)
        for allowance in (0, sorted(sizes)[len(sizes) // 2], sum(sizes)):
            with pruned.fixed_masks(c.pruned, max_bytes=allowance):
                assert torch.equal(c.pruned(x), want)
                kept = sum(s for m, s in zip(masked, sizes) if torch.float32 in m._products)
            assert kept <= allowance and (kept == sum(sizes)) == (allowance == sum(sizes))


@pytest.mark.parametrize("objective", ["min-error", "min-size"])
def test_n_auto_solves_nothing_twice(monkeypatch, objective):
    """The search's last step answers are the layer's: the final solve gets only the problems
    settled at an earlier n, and the masks equal a fixed-n construction's at the chosen n."""
    import solver

    solved = [0]
    real = solver.solve

    def counting(targets, *a, **kw):
        solved[0] += len(targets)
        return real(targets, *a, **kw)

    monkeypatch.setattr(solver, "solve", counting)
    eps = 0.02
    c = _construct(tiny_cnn, (2, 8, 8), (-1.0, 1.0), "auto", objective=objective, eps=eps, block_problems=50)
    monkeypatch.undo()
    total = sum(s.problems for s in c.solutions)
    searched = sum(t["solved"] for s in c.solutions for t in s.n_search["steps"])
    reused = sum(s.n_search["reused"] for s in c.solutions)
    assert 0 < reused < total
    assert solved[0] == searched + total - reused  # every problem of the search once, then the rest once
    for i, sol in enumerate(c.solutions):
        assert sol.n_search["reused"] == sol.n_search["steps"][-1]["solved"]
        fixed = _construct(tiny_cnn, (2, 8, 8), (-1.0, 1.0), c.specs[i].n, objective=objective, eps=eps)
        assert all(torch.equal(as_tensor(sol.masks[k]), as_tensor(fixed.solutions[i].masks[k])) for k in sol.masks)
        assert np.array_equal(sol.errors(), fixed.solutions[i].errors())


@pytest.mark.parametrize("part", ["whole", "subset"])
def test_n_auto_keeps_its_answers_packed_and_gives_them_back_as_solved(part):
    """The search's last answers are kept as bits (models.auto_n.Answers, ~13 bytes a problem) and read
    back as the solver gave them: masks, errors, statuses, presolve flags, the problems they answer."""
    import solver
    from models.auto_n import Answers

    rng = np.random.default_rng(0)
    targets, coeffs = rng.uniform(-1, 1, 40), rng.uniform(-1, 1, (40, 21)) * rng.uniform(-1, 1, (40, 21))
    index = np.arange(40) if part == "whole" else np.sort(rng.choice(40, 15, replace=False))
    res = solver.solve(targets[index], coeffs[index], backend="mitm", workers=1)
    kept = Answers.of(index, 40, res)
    assert (kept.index is None) == (part == "whole") and len(kept) == len(index)
    assert kept.masks.nbytes == len(index) * 3  # 21 bits a problem
    got_index, got = kept.result()
    assert np.array_equal(got_index, index) and np.array_equal(got.masks, res.masks)
    for name in ("errors", "sizes", "status", "fallback", "presolved"):
        assert np.array_equal(getattr(got, name), getattr(res, name)), name
    assert got.backend == res.backend


def test_the_weight_error_figure_counts_every_weight_and_bias_and_the_report_agrees():
    """The histograms behind weight_errors.png: per layer every weight and bias counted once, the
    bins spanning their log10 errors; the report's max and mean are those of the same errors."""
    from models.report import ERROR_FLOOR, layer_rows, weight_error_histograms

    c = _construct(tiny_cnn, (2, 8, 8), (0.0, 1.0), 6)
    hists = weight_error_histograms(c)
    assert [name for name, _, _ in hists] == [s.name for s in c.specs]
    for (name, edges, counts), layer, sol, row in zip(hists, c.layers, c.solutions, layer_rows(c)):
        errs = sol.errors()
        assert int(counts.sum()) == layer.num_params() == errs.size
        logs = np.log10(errs + ERROR_FLOOR)
        assert edges[0] == logs.min() and edges[-1] == pytest.approx(logs.max()) and len(edges) == 61
        assert row["max_weight_error"] == errs.max() and row["mean_weight_error"] == pytest.approx(errs.mean(), rel=1e-12)
