"""The construction: observed error <= certified bound, bound shrinks with n, variants agree,
tickets rebuild bit-exactly, conv biases are right at the borders, unsupported ops are named."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models import pipeline
from models.construct import ConstructOptions
from models.graph import UnsupportedModelError, trace_target

from .nets import LoneBatchNorm, WithSigmoid, WithTanh, dilated_cnn, tiny_cnn, tiny_mlp

CASES = {
    "mlp-signed": (tiny_mlp, (5,), (-1.0, 1.0)),
    "mlp-nonneg": (tiny_mlp, (5,), (0.0, 1.0)),
    "cnn-nonneg": (tiny_cnn, (2, 8, 8), (0.0, 1.0)),
    "cnn-signed": (tiny_cnn, (2, 8, 8), (-0.5, 1.0)),
    "cnn-dilated": (dilated_cnn, (2, 8, 8), (-1.0, 1.0)),
}


def _construct(make, shape, domain, n, variant="fanout", **kw):
    kw.setdefault("workers", 1)
    options = ConstructOptions(n=n, progress=False, **kw)
    return pipeline.construct(make(), shape, domain, options, variant)


@pytest.mark.parametrize("case", list(CASES))
def test_observed_error_within_bound_and_bound_shrinks_with_n(case):
    make, shape, domain = CASES[case]
    bounds = []
    for n in (3, 7, 12):
        c = _construct(make, shape, domain, n)
        check = pipeline.verify(c, None, samples=256)
        assert check["bound_holds"], (n, check)
        assert check["max_output_error"] <= check["certified_bound"]
        bounds.append(check["certified_bound"])
    assert bounds[0] > bounds[1] > bounds[2]
    assert bounds[2] < 0.05 * bounds[0]


def test_pruned_network_is_twice_as_deep_and_keeps_parameter_free_ops():
    c = _construct(tiny_cnn, (2, 8, 8), (0.0, 1.0), 4)
    pairs = [m for m in c.pruned.modules() if type(m).__name__ == "TicketPair"]
    assert len(pairs) == len(c.layers) == 4
    assert c.layers[0].folded_bn == "bn1" and c.layers[0].input_nonneg
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in c.pruned.modules())
    code = c.pruned.code
    assert "pool" in code and "avg" in code and "add" in code or "+" in code


@pytest.mark.parametrize("case", ["mlp-signed", "cnn-signed"])
def test_dense_and_fanout_variants_give_identical_outputs(case):
    make, shape, domain = CASES[case]
    a = _construct(make, shape, domain, 5, "fanout")
    b = _construct(make, shape, domain, 5, "dense")
    x = pipeline.domain_samples(shape, domain, 64, seed=3)
    with torch.no_grad():
        assert torch.equal(a.pruned(x), b.pruned(x))
    dense_a = [m for m in b.pruned.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    assert any(m.weight_orig.shape[1] > 1 and m.weight_orig.shape[0] > m.weight_orig.shape[1] for m in dense_a)
    for sa, sb in zip(a.solutions, b.solutions):  # same seed -> same random values -> same masks
        for key in sa.masks:
            assert torch.equal(sa.masks[key], sb.masks[key])


def test_same_seed_same_network_regardless_of_workers_and_chunks():
    a = _construct(tiny_mlp, (5,), (-1.0, 1.0), 6, workers=None)
    options = ConstructOptions(n=6, workers=1, progress=False, solver_options={"chunk_size": 7})
    b = pipeline.construct(tiny_mlp(), (5,), (-1.0, 1.0), options)
    x = pipeline.domain_samples((5,), (-1.0, 1.0), 32, seed=1)
    with torch.no_grad():
        assert torch.equal(a.pruned(x), b.pruned(x))
    c = _construct(tiny_mlp, (5,), (-1.0, 1.0), 6, seed=1)
    with torch.no_grad():
        assert not torch.equal(a.pruned(x), c.pruned(x))


def test_conv_bias_is_exact_at_the_borders():
    """A zero input makes every output pixel equal the bias; padding must not lose it."""
    torch.manual_seed(0)
    conv = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 5, padding=2)).eval()
    c = pipeline.construct(conv, (1, 7, 7), (0.0, 1.0), ConstructOptions(n=16, workers=1, progress=False))
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
    c = pipeline.construct(target, (2, 8, 8), (0.0, 1.0), ConstructOptions(n=5, workers=1, progress=False))
    check = pipeline.verify(c, None, samples=64)
    report = pipeline.build_report(c, check, target_desc={"name": "tiny", "arch": "module:tests.nets:TinyCNN"},
                                   data_spec=None, total_seconds=1.0)
    inputs = pipeline.check_inputs_for(None, (2, 8, 8), (0.0, 1.0), 0)
    out = tmp_path / "run"
    pipeline.save_run(out, c, report, path, {"x": 1}, inputs, export=True)
    ticket = torch.load(out / "ticket.pt", weights_only=True)
    from models.target import load_target

    rebuilt = pipeline.rebuild(ticket, load_target(out / ticket["target"]["file"], "module:tests.nets:TinyCNN")).pruned
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


@pytest.mark.parametrize("net, match", [
    (WithSigmoid, r"unsupported module Sigmoid 'act'"),
    (WithTanh, r"unsupported function tanh"),
    (LoneBatchNorm, r"BatchNorm 'bn' must directly follow a Linear/Conv2d"),
])
def test_unsupported_ops_are_named(net, match):
    with pytest.raises(UnsupportedModelError, match=match):
        trace_target(net(), input_nonneg=False)


def test_grouped_conv_refused():
    net = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(UnsupportedModelError, match=r"groups=2; only groups=1"):
        trace_target(net, input_nonneg=True)


def test_n_must_be_positive():
    with pytest.raises(ValueError, match=r"`n` .* must be an int >= 1; got 0"):
        _construct(tiny_mlp, (5,), (0.0, 1.0), 0)


def test_min_size_objective_and_weight_errors():
    c = _construct(tiny_mlp, (5,), (-1.0, 1.0), 10, objective="min-size", eps=0.02, backend="mitm")
    for sol in c.solutions:
        fits = sol.status_counts["infeasible"] == 0
        if fits:
            assert sol.weight_error.max() <= 0.02 + 1e-12
    check = pipeline.verify(c, None, samples=64)
    assert check["bound_holds"]


def test_errors_recomputed_from_masks_match_solver_errors():
    from models.commands import recompute_errors
    from models.random_net import generate

    c = _construct(tiny_cnn, (2, 8, 8), (-1.0, 1.0), 6)
    for layer, spec, sol in zip(c.layers, c.specs, c.solutions):
        we, be = recompute_errors(layer, spec, generate(spec), sol.masks)
        assert np.allclose(we, sol.weight_error, atol=1e-12)
        if be is not None:
            assert np.allclose(be, sol.bias_error, atol=1e-12)


def test_masks_are_bool_and_convert_to_torch_prune_and_plain():
    from torch.nn.utils import prune

    from models.pruned import MaskedLinear, to_plain, to_torch_prune

    c = _construct(tiny_cnn, (2, 8, 8), (-1.0, 1.0), 4, variant="dense")
    masked = [m for m in c.pruned.modules() if hasattr(m, "weight_mask")]
    assert masked and all(m.weight_mask.dtype == torch.bool for m in masked)
    x = pipeline.domain_samples((2, 8, 8), (-1.0, 1.0), 16, seed=0)
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
