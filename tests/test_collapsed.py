"""The collapsed form (each pair as the target-shaped layer of its kept sums) computes the
materialised pruned network, and verification refuses a materialised network that differs."""

from __future__ import annotations

import pytest
import torch

from models.cli import main
from models.collapsed import FLOAT64_AGREEMENT, FormMismatchError, collapse
from models.construct import ConstructOptions, construct
from models.pruned import MaskedConv2d, MaskedLinear
from models.verify import kept, verify

from . import nets

CASES = {
    "mlp-signed": (nets.tiny_mlp, (5,), (-1.0, 1.0), "fanout"),
    "mlp-dense": (nets.tiny_mlp, (5,), (-1.0, 1.0), "dense"),
    "cnn-nonneg": (nets.tiny_cnn, (2, 8, 8), (0.0, 1.0), "fanout"),
    "cnn-dense": (nets.tiny_cnn, (2, 8, 8), (-1.0, 1.0), "dense"),
    "residual": (nets.tiny_resnet, (2, 8, 8), (-1.0, 1.0), "fanout"),
    "grouped": (nets.grouped_cnn, (2, 8, 8), (-1.0, 1.0), "fanout"),
    "norms (diagonal pairs)": (nets.norm_net, (1, 6, 6), (-1.0, 1.0), "fanout"),
    "encoder (attention)": (nets.encoder_classifier, (4, 3), (-1.0, 1.0), "fanout"),
    "tokens (embedding)": (nets.token_classifier, (5,), (0.0, 19.0), "fanout"),
    "conv1d": (nets.conv1d_net, (2, 12), (-1.0, 1.0), "fanout"),
}


def _construct(make, shape, domain, n=6, variant="fanout"):
    options = ConstructOptions.from_kwargs(n=n, progress=False, eps=0.02, workers=1)
    return construct(make(), shape, domain, options, variant)


@pytest.mark.parametrize("case", list(CASES))
def test_the_collapsed_form_computes_the_materialised_network(case):
    make, shape, domain, variant = CASES[case]
    c = _construct(make, shape, domain, variant=variant)
    collapsed = collapse(c.folded, c.layers, kept(c))
    x = c.domain.samples(shape, 64, 5)
    x64 = x if c.domain.tokens else x.double()
    with torch.no_grad():
        g, m, f = collapsed(x64), c.pruned(x64), c.target.double()(x64)
    scale = 1.0 + float(g.abs().max())
    assert float((g - m).abs().max()) <= FLOAT64_AGREEMENT * scale
    assert float((g - f).abs().max()) > 1e3 * FLOAT64_AGREEMENT * scale  # the ticket, not the target
    # the collapsed form has the target's size, whatever n is
    assert sum(b.numel() for b in collapsed.buffers()) <= 2 * sum(l.num_params() for l in c.layers) + 64


def test_verification_reports_both_forms_and_their_differences(monkeypatch):
    import models.verify as mv

    c = _construct(nets.tiny_cnn, (2, 8, 8), (-1.0, 1.0))
    monkeypatch.setattr(mv, "MIN_PLANNED_SECONDS", 60.0)  # time for every input, whatever the machine's load
    check = verify(c, None, samples=30, adversarial=4)
    mat = check.materialised
    assert mat["float32_inputs"] == 32 and mat["float64_inputs"] == 8
    assert 0 < mat["float32_difference"] <= mat["tolerance"]["float32"]
    assert mat["float64_difference"] <= mat["tolerance"]["float64"]
    assert set(check.forms) == {"output errors, accuracy, agreement", "adversarial search", "certified bound",
                                   "check against the real network"}
    assert set(check.phase_seconds) == {"collapse", "float32", "float64", "materialised", "certified_bound",
                                           "adversarial"}
    # the errors are the materialised network's in float64, within float rounding
    x = c.domain.samples(c.input_shape, 30, c.options.seed).double()
    with torch.no_grad():
        direct = float((c.target.double()(x) - c.pruned(x)).abs().max())
    assert abs(check.max_output_error - direct) <= 1e-12


def test_the_optional_work_is_planned_within_a_share_of_the_solve_time(monkeypatch):
    """With nothing left of the share (solve time 0, no minimum) the materialised network runs on its
    fewest inputs and the adversarial search takes its fewest steps and starts; a rebuilt ticket (no
    solve time) gets the fixed allowances: every input of a small network."""
    import models.verify as mv

    c = _construct(nets.tiny_cnn, (2, 8, 8), (-1.0, 1.0))
    monkeypatch.setattr(mv, "MIN_PLANNED_SECONDS", 0.0)
    c.seconds["solve"] = 0.0
    check = verify(c, None, samples=30, adversarial=16)
    assert check.materialised["float32_inputs"] == mv.MIN_MATERIALISED_INPUTS
    assert check.materialised["float64_inputs"] == 1
    assert check.adversarial["steps"] == 5 and check.adversarial["starts"] <= 3  # 2 restarts (+ a corner)
    del c.seconds["solve"]
    monkeypatch.setattr(mv, "ADVERSARIAL_SECONDS", 1e9)  # the fixed allowance, whatever this machine's speed
    check = verify(c, None, samples=30, adversarial=16)
    assert check.materialised["float32_inputs"] == 32 and check.materialised["float64_inputs"] == 8
    assert check.adversarial["steps"] == 50 and check.adversarial["starts"] == 16


def _flip_one_kept_weight(pruned: torch.nn.Module) -> None:
    """Drop one kept entry of the first combine layer's mask (what a mask bug would do); the
    solution's masks, which the buffer shares memory with, stay as they are."""
    from models.masks import PackedMask

    layer = next(m for m in pruned.modules() if isinstance(m, (MaskedLinear, MaskedConv2d)) and m.weight_mask.any())
    mask = layer.weight_mask.clone()
    flat = mask.view(-1)
    flat[int(flat.nonzero()[0])] = False
    if hasattr(layer, "weight_bits"):  # held packed (a combine layer regenerating its values)
        layer.weight_bits = torch.from_numpy(PackedMask.of(mask).bits)
    else:
        layer.weight_mask = mask


def test_a_materialised_network_that_differs_is_a_bug_not_a_result(tmp_path, monkeypatch, capsys):
    c = _construct(nets.tiny_cnn, (2, 8, 8), (-1.0, 1.0))
    _flip_one_kept_weight(c.pruned)
    with pytest.raises(FormMismatchError, match=r"differs from its collapsed form by .* in float32 .*a bug"):
        verify(c, None, samples=30, adversarial=0)
    # at the command line: one line and exit 1 (a check failed), not a traceback
    import models.api as api

    real = api.construct

    def broken(*a, **kw):
        out = real(*a, **kw)
        _flip_one_kept_weight(out.pruned)
        return out

    monkeypatch.setattr(api, "construct", broken)
    torch.save(nets.tiny_mlp().state_dict(), tmp_path / "t.pt")
    code = main(["solve", str(tmp_path / "t.pt"), "--arch", "module:tests.nets:TinyMLP", "--n", "6", "--input-domain",
                 "signed", "--out", str(tmp_path / "run"), "--no-progress"])
    assert code == 1
    assert "check failed: the materialised pruned network differs from its collapsed form" in capsys.readouterr().err


def _float32_copy(network):
    """A float32 copy of every tensor of ``network``, the layers the folded target casts included."""
    import copy

    from models.fxgraph import CastLayer

    out = copy.deepcopy(network)
    for name, module in list(out.named_modules()):
        if isinstance(module, CastLayer):
            out.set_submodule(name, copy.deepcopy(module._layer))
    return out.float()


@pytest.mark.parametrize("case", ["cnn-nonneg", "norms (diagonal pairs)", "encoder (attention)", "tokens (embedding)"])
def test_float32_views_compute_what_float32_copies_compute(case):
    """Verification's float32 forms cast one layer at a time: bit for bit what a float32 copy of the
    whole network computes, with no copy of any layer's weights (the folded trace's layers hold the
    target layers' own tensors)."""

    from models.collapsed import in_float32

    make, shape, domain, variant = CASES[case]
    c = _construct(make, shape, domain, variant=variant)
    for layer in c.layers:
        held = c.folded.get_submodule(layer.name)
        held = getattr(held, "_layer", held).weight  # a CastLayer: the float32 tensor it casts
        assert held.data_ptr() == layer.weight.data_ptr() or held.T.data_ptr() == layer.weight.data_ptr()
    collapsed = collapse(c.folded, c.layers, kept(c))
    x = c.domain.samples(shape, 16, 3)
    x32 = x if c.domain.tokens else x.float()
    with torch.no_grad():
        for network in (c.folded, collapsed):
            view, copied = in_float32(network, c.layers), _float32_copy(network)
            y = view(x32)
            assert y.dtype == torch.float32 and torch.equal(y, copied(x32))
            assert network(x if c.domain.tokens else x.double()).dtype == torch.float64  # the float64 form is untouched


def test_float64_combine_convolutions_unfold_a_bounded_block_of_channels(monkeypatch):
    """On a CPU, float64 convolutions unfold their input; a combine convolution sums over blocks of
    its input channels instead, so one large input does not need gigabytes: same outputs."""
    import torch.nn.functional as F

    import models.pruned as mp

    c = _construct(nets.tiny_cnn, (2, 8, 8), (-1.0, 1.0))
    x = c.domain.samples(c.input_shape, 6, 1).double()
    with torch.no_grad():
        whole = c.pruned(x)
    unfolded = []  # bytes each float64 convolution unfolds: batch x channels x taps x output pixels x 8

    def conv2d(inp, w, *args, **kwargs):
        out = F.conv2d.__wrapped__(inp, w, *args, **kwargs)
        unfolded.append(inp.shape[0] * inp.shape[1] * w.shape[2] * w.shape[3] * out.shape[2] * out.shape[3] * 8)
        return out

    conv2d.__wrapped__ = F.conv2d
    monkeypatch.setattr(F, "conv2d", conv2d)
    limit = 8 * 9 * 64 * len(x) * 5  # five channels of 8x8 pixels, 3x3 taps
    monkeypatch.setattr(mp, "UNFOLD_BYTES", limit)
    with torch.no_grad():
        blocks = c.pruned(x)
    layers = [m for m in c.pruned.modules() if isinstance(m, MaskedConv2d)]
    assert unfolded and max(unfolded) <= limit and len(unfolded) > len(layers)
    assert float((blocks - whole).abs().max()) <= FLOAT64_AGREEMENT * (1 + float(whole.abs().max()))
    with torch.no_grad():
        assert torch.equal(c.pruned(x.float()), c.pruned(x.float()))  # float32: one call per block of rows


def test_a_float64_constant_of_the_graph_is_cast_where_it_meets_the_float32_view():
    """A constant the graph makes in float64 (BERT's mask: ones cast to the traced dtype, times
    float64's min) is computed as the float64 network computes it and cast where it meets the
    activations: the float32 views compute in float32 (the mask's float64 dtype reached the
    attention's matmul and failed, "expected scalar type Double but found Float")."""
    from models.collapsed import in_float32

    from .nets import FloatConstant

    def make():
        torch.manual_seed(0)
        return FloatConstant().eval()

    c = _construct(make, (4,), (-1.0, 1.0))
    x = torch.rand(5, 4) * 2 - 1
    with torch.no_grad():
        for network in (c.folded, collapse(c.folded, c.layers, kept(c))):
            y64, y32 = network(x.double()), in_float32(network, c.layers)(x)
            assert y32.dtype == torch.float32 and torch.allclose(y32.double(), y64, atol=1e-5)
