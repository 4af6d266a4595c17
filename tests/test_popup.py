"""Edge-popup and the Experiment 2 networks: masks, frozen weights, matched sizes, determinism."""

from __future__ import annotations

import pytest
import torch

from benchmarks.popup import (PopupNet, RedundantLinear, TopK, TrainSettings, accuracy, redundant_params, train_scores,
                          wide_hidden)


def test_topk_keeps_the_largest_scores_and_passes_the_gradient_through():
    scores = torch.tensor([0.3, -2.0, 1.0, 0.1, 5.0, -0.2], requires_grad=True)
    mask = TopK.apply(scores.abs(), 0.5)
    assert mask.tolist() == [0.0, 1.0, 1.0, 0.0, 1.0, 0.0]
    (mask * torch.arange(6.0)).sum().backward()
    assert scores.grad.tolist() == [0.0, -1.0, 2.0, 3.0, 4.0, -5.0]  # straight through, times d|s|/ds
    assert TopK.apply(torch.rand(10), 0.01).sum() == 1  # at least one entry


@pytest.mark.parametrize("arch", ["fc2", "fc4", "lenet5"])
def test_wide_and_redundant_networks_have_about_the_same_weights(arch):
    red, wide = PopupNet(arch, "redundant", 0.5, 0), PopupNet(arch, "wide", 0.5, 0)
    assert abs(red.weights() - wide.weights()) <= 0.002 * red.weights()
    assert red.kept() == pytest.approx(0.5 * red.weights(), rel=1e-3)
    x = torch.rand(3, 1, 28, 28)
    assert red(x).shape == wide(x).shape == (3, 10)
    linear = red.weights() - (sum(m.weight.numel() for m in red.features if hasattr(m, "weight")) if red.features else 0)
    assert linear == redundant_params(arch)
    assert wide_hidden("fc2") == round(redundant_params("fc2") / (784 + 10))


def test_only_scores_train_and_training_is_deterministic():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(96, 1, 28, 28, generator=gen), torch.randint(0, 10, (96,), generator=gen)
    nets = []
    for _ in range(2):
        net = PopupNet("lenet5", "redundant", 0.75, seed=3)
        weights = {k: v.clone() for k, v in net.state_dict().items() if k.endswith("weight")}
        scores = {k: v.clone() for k, v in net.state_dict().items() if k.endswith("scores")}
        train_scores(net, x, y, TrainSettings(epochs=2, batch=32), seed=1)
        after = net.state_dict()
        assert all(torch.equal(after[k], v) for k, v in weights.items())  # the random weights stay
        assert any(not torch.equal(after[k], v) for k, v in scores.items())  # the scores move
        nets.append(after)
    assert all(torch.equal(nets[0][k], nets[1][k]) for k in nets[0])
    assert 0.0 <= accuracy(net, x, y) <= 1.0


@pytest.mark.parametrize("kw, message", [
    (dict(arch="fc3", structure="wide", sparsity=0.5), "arch must be one of"),
    (dict(arch="fc2", structure="narrow", sparsity=0.5), "structure one of"),
    (dict(arch="fc2", structure="wide", sparsity=1.0), "sparsity \\(the pruned fraction\\) must be in \\[0, 1\\)"),
])
def test_bad_arguments_are_named(kw, message):
    with pytest.raises(ValueError, match=message):
        PopupNet(seed=0, **kw)


@pytest.mark.parametrize("relu", [True, False])
def test_redundant_layer_is_fan_out_then_combine_with_or_without_relu(relu):
    """Unit (i, k) = w_ik x_i, then the optional ReLU, then the combine layer over the units (i, k)."""
    gen = torch.Generator().manual_seed(0)
    layer = RedundantLinear(4, 3, redundancy=2, kept=1.0, generator=gen, relu=relu)
    x = torch.randn(5, 4, generator=gen)
    fan = layer.fan_out.weight.view(4, 2)
    units = (x[:, :, None] * fan[None]).reshape(5, 8)
    expected = (units.clamp(min=0) if relu else units) @ layer.combine.weight.T
    assert torch.allclose(layer(x), expected, atol=1e-6)
    assert PopupNet("fc2", "redundant", 0.5, 0, relu=relu).classifier[0].relu is relu
