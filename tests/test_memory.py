"""Memory is planned: a run that cannot fit its budget is refused before any solving, and
verification runs in batches sized to the budget."""

from __future__ import annotations

import time

import pytest
import torch

from models.cli import main
from models.construct import ConstructOptions, construct, propagate_shapes
from models.domain import InputDomain
from models.trace import trace_target
from models.memory import GIB, MemoryPlanError, plan
from models.verify import verify

from .nets import ResNet18Like, tiny_gpt2, tiny_mlp


def _specs(model, shape, options=ConstructOptions()):
    from models.construct import make_spec

    folded, layers = trace_target(model, input_nonneg=True)
    shapes = propagate_shapes(folded, shape, InputDomain(0.0, 1.0))
    return layers, [make_spec(l, i, options, shapes[l.name][0]) for i, l in enumerate(layers)], shapes


def test_plan_counts_the_random_network_and_sizes_the_verification_batch():
    layers, specs, shapes = _specs(tiny_mlp(), (5,))
    p = plan(layers, specs, shapes, "fanout", 1 << 17, budget=GIB, baseline=0)
    # no values of B: its mask as bits, u and A's biases with their masks
    assert p.random_network == sum((s.d_out * s.hidden_group + 7) // 8 + 5 * (s.d_in * s.units_per_input + s.hidden)
                                   for s in specs)
    assert p.verify_batch == p.materialised_batch == 512  # tiny: the cap
    k = max(7, -(-(p.solve_transient - p.verify_fixed) // p.verify_per_input))  # verification dominates solving
    assert k < 512
    room = p.random_network + p.targets + p.verify_fixed + k * p.verify_per_input
    assert plan(layers, specs, shapes, "fanout", 1 << 17, budget=room, baseline=0).materialised_batch == k
    with pytest.raises(MemoryPlanError):
        plan(layers, specs, shapes, "fanout", 1 << 17, budget=room - p.verify_per_input * k, baseline=0)
    dense = plan(layers, specs, shapes, "dense", 1 << 17, budget=GIB, baseline=0)
    assert dense.random_network > p.random_network


def test_a_smaller_verification_batch_gives_the_same_verification():
    c = construct(tiny_mlp(), (5,), (-1.0, 1.0), ConstructOptions.from_kwargs(n=4, workers=1, progress=False))
    full = verify(c, None, samples=100)
    c.plan.verify_batch = c.plan.materialised_batch = 7
    small = verify(c, None, samples=100)
    for key in ("max_output_error", "mean_output_error"):  # float64 matrix products: batch-dependent rounding only
        assert getattr(small, key) == pytest.approx(getattr(full, key), rel=1e-12, abs=1e-15)


def test_a_run_over_budget_is_refused_before_solving(tmp_path, capsys):
    path = tmp_path / "m.pt"
    torch.save(tiny_mlp().state_dict(), path)
    out = tmp_path / "o"
    assert main(["solve", str(path), "--arch", "mlp", "--memory-limit", "50M", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "this run needs about" in err and "above the memory budget of 0.05 GiB (--memory-limit" in err
    assert not out.exists()
    layers, specs, shapes = _specs(tiny_mlp(), (5,))
    with pytest.raises(MemoryPlanError, match="use a smaller --n, a smaller --input-shape"):  # fanout already
        plan(layers, specs, shapes, "fanout", 1 << 17, budget=10, baseline=0)
    with pytest.raises(MemoryPlanError, match="use a smaller --n, --variant fanout, a smaller --input-shape"):
        plan(layers, specs, shapes, "dense", 1 << 17, budget=10, baseline=0)


@pytest.mark.slow
def test_resnet18_at_224_is_refused_within_seconds_when_it_cannot_fit(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "r18.pt"
    torch.save(ResNet18Like().state_dict(), path)
    start = time.perf_counter()
    code = main(["solve", str(path), "--arch", "module:tests.nets:ResNet18Like", "--input-shape", "3,224,224",
                 "--memory-limit", "1.5G", "--out", str(tmp_path / "r18")])
    assert code == 2 and time.perf_counter() - start < 10
    err = capsys.readouterr().err
    assert "random network 0.03 GiB" in err and "verification 352.8 MiB per input" in err  # B as bits, no values; float64 unfolding bounded
    assert not (tmp_path / "r18").exists()


def _float64_bytes_alive() -> int:
    """Bytes of the float64 tensors alive in this process (their storages, each once)."""
    import gc

    gc.collect()
    storages = {}
    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor) and obj.dtype == torch.float64 and obj.device.type == "cpu":
            storage = obj.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


@pytest.mark.parametrize("make", [lambda: ResNet18Like().eval(), lambda: tiny_gpt2(vocab_size=4000)], ids=["resnet18-like", "gpt2-tiny"])
def test_the_trace_holds_the_targets_own_tensors_and_no_float64_copy(make):
    """The folded target holds each layer's weight as the target's own tensor (a tied weight, GPT-2's
    embedding and output layer, once) where nothing was folded in; float64 only where BatchNorm was
    folded. Nothing else keeps the float64 copy traced (transformers' tracer did: 8 bytes a weight)."""
    from models.fxgraph import CastLayer

    model = make()
    own = {p.data_ptr() for p in model.parameters()}
    before = _float64_bytes_alive()
    folded, layers = trace_target(model, input_nonneg=False)
    for layer in layers:
        if layer.folded_bn is None and layer.weight.numel() >= 1000:  # diagonal pairs' weights are formed: small
            assert layer.weight.dtype == torch.float32 and layer.weight.data_ptr() in own, layer.name
            held = folded.get_submodule(layer.name)
            assert isinstance(held, CastLayer) and held._layer.weight.data_ptr() == layer.weight.data_ptr()
        elif layer.folded_bn is not None:
            assert layer.weight.dtype == torch.float64
    folded_bytes = sum(8 * (layer.weight.numel() + (0 if layer.bias is None else layer.bias.numel()))
                       for layer in layers if layer.weight.dtype == torch.float64)
    weights = sum(p.numel() for p in model.parameters())
    # besides the folded layers' float64 values: small tensors (biases, norms, buffers), not a copy of the weights
    assert _float64_bytes_alive() - before - folded_bytes < 8 * weights / 4
    x = torch.randint(0, 4000, (2, 16)) if layers[0].kind == "embedding" else torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        out = model(x)
        ref = getattr(out, "logits", out)
        assert folded(x if x.dtype == torch.long else x.double()).dtype == torch.float64
        assert torch.allclose(folded(x if x.dtype == torch.long else x.double()).float(), ref, atol=1e-4)
