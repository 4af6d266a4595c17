"""Elementwise affine parameters as diagonal pairs, attention decomposed into its projections,
matmul between activations, and a certified bound that is none (with the reason) where an op has
no rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from models.attention import decompose
from models.construct import ConstructOptions, construct
from models.errors import UnsupportedModelError
from models.trace import trace_target
from models.report import build_report, report_markdown, unconstructed
from models.domain import domain_samples
from models.verify import verify

from .nets import LoneBatchNorm, attention_only, encoder_classifier, norm_net
from .problems import assert_errors_from_masks


def _construct(make, shape, domain, n, variant="fanout", **kw):
    kw.setdefault("workers", 1)
    options = ConstructOptions.from_kwargs(n=n, progress=False, objective="min-error", **kw)
    return construct(make(), shape, domain, options, variant)


def _errors(c, shape, domain, count=128):
    x = domain_samples(shape, domain, count, 3).double()
    with torch.no_grad():
        f = c.target.double()(x)
        return f, (f - c.pruned(x)).abs()


def lone_batch_norm():
    torch.manual_seed(1)
    return LoneBatchNorm().eval()


@pytest.mark.parametrize("make, shape", [(norm_net, (1, 6, 6)), (lone_batch_norm, (3,))])
def test_elementwise_affine_parameters_become_diagonal_pairs(make, shape):
    """GroupNorm/LayerNorm weight and bias, BatchNorm after a nonlinearity and layer scale each get a
    diagonal pair (one unit group per feature); nothing of the target is used as it is."""
    c = _construct(make, shape, (-1.0, 1.0), 21)
    diag = {layer.name: layer for layer in c.layers if layer.groups > 1}
    expected = {"gn", "bn", "gamma_affine", "ln", "bn1"} if make is norm_net else {"bn"}
    assert set(diag) == expected
    for layer in diag.values():
        assert layer.weight.shape == (layer.d_out, 1) and layer.groups == layer.d_out
    if make is norm_net:
        assert diag["gamma_affine"].sources == ["gamma"] and diag["gamma_affine"].bias is None
        assert diag["ln"].sources == ["ln.weight", "ln.bias"]
    assert unconstructed(c) == []
    assert_errors_from_masks(c)
    f, err = _errors(c, shape, (-1.0, 1.0))
    assert float(err.max()) <= 1e-3 * float(f.abs().max())
    dense = _construct(make, shape, (-1.0, 1.0), 21, variant="dense")
    x = domain_samples(shape, (-1.0, 1.0), 16, 4).double()
    with torch.no_grad():
        assert torch.allclose(dense.pruned(x), c.pruned(x), atol=1e-12)


def test_an_op_without_a_bound_rule_gives_no_bound_and_says_why():
    c = _construct(norm_net, (1, 6, 6), (-1.0, 1.0), 8)
    check = verify(c, None, samples=32, adversarial=2)
    assert check.certified_bound is None and check.bound_holds is None
    assert check.certified_bound_reason.startswith("no bound rule for group_norm")
    report = build_report(c, check, target_desc={"name": "norms"}, data_spec=None, total_seconds=1.0)
    assert report["certified_bound"] is None and "group_norm" in report["certified_bound_reason"]
    assert "Certified bound: none, no bound rule for group_norm" in report_markdown(report)


@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_encoder_is_constructed_projection_by_projection(norm_first):
    make = lambda: encoder_classifier(norm_first=norm_first)  # noqa: E731
    net = make()
    folded, layers = trace_target(net, input_nonneg=False)
    names = [layer.name for layer in layers]
    prefix = "encoder.layers.0."
    expected = [prefix + f"self_attn.{p}_proj" for p in ("q", "k", "v", "out")] + [prefix + "norm1", prefix + "norm2"]
    assert set(expected) <= set(names) and len(names) == len(expected) + 4  # + embed, linear1, linear2, head
    x = torch.randn(5, 4, 3, dtype=torch.float64)
    with torch.no_grad():  # the decomposed attention is the same function
        assert torch.allclose(folded(x), net.double()(x), atol=1e-12)
    c = _construct(make, (4, 3), (-1.0, 1.0), 21)
    assert unconstructed(c) == []
    assert_errors_from_masks(c)
    f, err = _errors(c, (4, 3), (-1.0, 1.0))
    assert float(err.max()) <= 1e-3 * float(f.max() - f.min())


def test_decomposed_attention_equals_multihead_attention():
    torch.manual_seed(0)
    for kdim in (None, 5):
        mha = nn.MultiheadAttention(6, 3, batch_first=True, kdim=kdim, vdim=kdim).double().eval()
        holder = nn.Module()
        holder.att = mha
        ref = nn.Module()
        ref.att = mha
        q = torch.randn(2, 4, 6, dtype=torch.float64)
        kv = torch.randn(2, 7, kdim or 6, dtype=torch.float64)
        with torch.no_grad():
            want, want_w = mha(q, kv, kv)
            sources = decompose(holder)
            got, got_w = holder.att(q, kv, kv)
        assert torch.allclose(got, want, atol=1e-12) and torch.allclose(got_w, want_w, atol=1e-12)
        packed = "att.in_proj_weight" if kdim is None else "att.q_proj_weight"
        assert packed in sources["att.q_proj"] and "att.in_proj_bias" in sources["att.q_proj"]


def test_matmul_and_softmax_between_activations_keep_the_bound():
    c = _construct(attention_only, (4, 6), (-1.0, 1.0), 10)
    check = verify(c, None, samples=128, adversarial=4)
    assert check.certified_bound is not None and check.bound_holds
    assert check.max_output_error <= check.adversarial_output_error <= check.certified_bound


def test_matmul_rule_holds():
    """For A, B in their intervals and A', B' within delta of them: AB in the interval the rule gives,
    A'B' within its delta of AB."""
    from models.rules import Bound, rule_named

    gen = torch.Generator().manual_seed(2)

    def stacked(shape):
        lo = torch.randn((1, *shape), generator=gen, dtype=torch.float64)
        hi = lo + torch.rand((1, *shape), generator=gen, dtype=torch.float64)
        return torch.cat([lo, hi, 0.2 * torch.rand((1, *shape), generator=gen, dtype=torch.float64)])

    A, B = stacked((2, 3, 4)), stacked((2, 4, 5))
    b = rule_named("matmul").interval(None, tuple(Bound(*x) for x in (A, B)), {})
    out = torch.stack(torch.broadcast_tensors(b.lo, b.hi, b.delta))
    for trial in range(600):
        vals, pruned = [], []
        for x in (A, B):
            t = torch.rand(x[0].shape, generator=gen, dtype=torch.float64)
            s = 2 * torch.rand(x[0].shape, generator=gen, dtype=torch.float64) - 1
            if trial % 2:  # vertices: the extremes of a product are at the intervals' ends
                t, s = t.round(), s.sign()
            v = x[0] + (x[1] - x[0]) * t
            vals.append(v)
            pruned.append(v + x[2] * s)
        y, y2 = vals[0] @ vals[1], pruned[0] @ pruned[1]
        assert torch.all(y >= out[0] - 1e-12) and torch.all(y <= out[1] + 1e-12)
        assert torch.all((y - y2).abs() <= out[2] + 1e-12)


@pytest.mark.parametrize("kw, match", [
    ({"mask": True}, r"attention masks .* are not supported"),
    ({"batch_first": False}, r"batch_first=False"),
])
def test_attention_it_cannot_keep_apart_is_refused(kw, match):
    with pytest.raises(UnsupportedModelError, match=match):
        trace_target(attention_only(**kw), input_nonneg=False)


def test_a_parameter_varying_along_two_dimensions_is_refused():
    class PositionTable(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)
            self.table = nn.Parameter(torch.randn(4, 3))

        def forward(self, x):
            return self.fc(x) + self.table

    with pytest.raises(UnsupportedModelError, match=r"parameter 'table' of shape \(4, 3\) is added to"):
        trace_target(PositionTable(), input_nonneg=False)


def test_a_parameter_used_directly_is_refused_with_what_is_supported():
    """A parameter read by an op with no rule is named, with the parameter uses that are supported; one
    gathered by an index buffer (as Swin's relative position bias table) is named as such."""
    class Direct(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)
            self.table = nn.Parameter(torch.randn(5))

        def forward(self, x):
            return self.fc(x) * self.table.sum()

    class Gathered(Direct):
        def __init__(self):
            super().__init__()
            self.register_buffer("index", torch.tensor([0, 2, 4]))

        def forward(self, x):
            return self.fc(x) + self.table[self.index]

    with pytest.raises(UnsupportedModelError, match=r"uses the tensor 'table' directly .* position table, a learned "
                                                    r"token concatenated"):
        trace_target(Direct(), input_nonneg=False)
    with pytest.raises(UnsupportedModelError, match=r"parameter 'table' is read through an index buffer .* no rule "
                                                    r"for a gathered parameter"):
        trace_target(Gathered(), input_nonneg=False)


def test_grouped_linear_is_the_block_diagonal_linear():
    from models.layers import grouped_linear

    gen = torch.Generator().manual_seed(0)
    w = torch.randn(6, 3, generator=gen, dtype=torch.float64)  # 2 groups: 3 inputs -> 3 outputs each
    b = torch.randn(6, generator=gen, dtype=torch.float64)
    dense = torch.zeros(6, 6, dtype=torch.float64)
    dense[:3, :3], dense[3:, 3:] = w[:3], w[3:]
    x = torch.randn(4, 5, 6, generator=gen, dtype=torch.float64)
    assert torch.allclose(grouped_linear(x, w, b, 2), torch.nn.functional.linear(x, dense, b), atol=1e-12)


def test_transformer_from_the_cli_solves_and_its_ticket_rebuilds(tmp_path, capsys):
    """`lottery solve` on a saved state_dict with a factory arch, then `lottery verify`: the rebuilt
    pruned network's outputs are bit-exact and the report says why there is no bound."""
    import json

    from models.cli import main

    path = tmp_path / "enc.pt"
    torch.save(encoder_classifier().state_dict(), path)
    out = tmp_path / "run"
    assert main(["solve", str(path), "--arch", "module:tests.nets:encoder_classifier", "--input-shape", "4,3",
                 "--input-domain", "signed", "--data", "none", "--n", "12", "--out", str(out), "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["unconstructed_params"] == 0 and report["certified_bound"] is None
    assert "layer_norm" in report["certified_bound_reason"]
    capsys.readouterr()
    assert main(["verify", str(out)]) == 0
    assert "bit-exact: True" in capsys.readouterr().out


def test_vision_transformer_tokens_and_position_table_are_constructed():
    """A class token (expanded and concatenated) and a (1, T, D) position table get pairs like the
    rest: nothing of the target used as it is, output within 1e-3 of its range at n = 21."""
    from .nets import tiny_vit

    c = _construct(tiny_vit, (1, 8, 8), (0.0, 1.0), 21)
    names = {layer.name: layer for layer in c.layers}
    token, table = names["class_token_affine"], names["pos_embedding_affine"]
    assert token.sources == ["class_token"] and table.sources == ["pos_embedding"]
    assert torch.equal(token.weight, torch.zeros_like(token.weight)) and token.d_out == 8
    assert table.d_out == 5 * 8 and torch.equal(table.weight, torch.ones_like(table.weight))
    assert unconstructed(c) == []
    assert_errors_from_masks(c)
    f, err = _errors(c, (1, 8, 8), (0.0, 1.0))
    assert float(err.max()) <= 1e-3 * float(f.max() - f.min())


def test_chunk_channel_shuffle_in_place_add_and_eval_identities(monkeypatch):
    import models.trace.identities as graph

    from .nets import _eval_identity, shuffle_block

    with pytest.raises(UnsupportedModelError, match="unsupported function _eval_identity"):
        trace_target(shuffle_block(), input_nonneg=True)
    monkeypatch.setitem(graph.EVAL_IDENTITIES, (_eval_identity.__module__, "_eval_identity"), 2)
    with pytest.raises(UnsupportedModelError, match="unsupported function _eval_identity"):  # training=True
        trace_target(shuffle_block(training=True), input_nonneg=True)
    c = _construct(shuffle_block, (2, 6, 6), (0.0, 1.0), 8)
    check = verify(c, None, samples=64, adversarial=2)
    assert check.bound_holds and check.max_output_error <= check.certified_bound
    assert_errors_from_masks(c)


def test_flatten_of_the_batch_dimension_is_refused():
    from .nets import FlattenAll

    with pytest.raises(UnsupportedModelError, match="flatten from dim 0 would merge the batch dimension"):
        trace_target(FlattenAll(), input_nonneg=False)


@pytest.mark.parametrize("norm", [False, True])
def test_embedding_is_a_linear_map_of_the_one_hot_token(norm):
    """An Embedding's pair reads token ids: gathering the token's units (fan-out variant) equals the
    one-hot vector through A, ReLU, B (dense variant); errors from masks are the solver's; without a
    layer norm the certified bound exists and holds, above the hill climb's error."""
    from .nets import token_classifier

    make = lambda: token_classifier(norm=norm)  # noqa: E731
    c = _construct(make, (5,), (0.0, 19.0), 21)
    assert c.domain.tokens and c.layers[0].kind == "embedding" and c.layers[0].weight.shape == (8, 20)
    assert c.specs[0].units_per_input == 21 and not c.specs[0].has_bias  # one-hot input: one sign group
    assert_errors_from_masks(c)
    dense = _construct(make, (5,), (0.0, 19.0), 21, variant="dense")
    x = domain_samples((5,), (0.0, 19.0), 32, 5, tokens=True)
    assert x.dtype == torch.long and int(x.min()) >= 0 and int(x.max()) <= 19
    with torch.no_grad():
        f, g = c.target.double()(x), c.pruned(x)
        assert torch.allclose(dense.pruned(x), g, atol=1e-12)
    assert float((f - g).abs().max()) <= 1e-3 * float(f.max() - f.min())
    check = verify(c, None, samples=64, adversarial=4)
    witness = check.witness
    assert witness.dtype == torch.long and 0 <= int(witness.min()) and int(witness.max()) <= 19
    assert check.max_output_error <= check.adversarial_output_error
    if norm:
        assert check.certified_bound is None and "layer_norm" in check.certified_bound_reason
    else:
        assert check.bound_holds and check.adversarial_output_error <= check.certified_bound
    assert [n for n in unconstructed(c) if not n.startswith("ln.")] == []


def test_embedding_interval_covers_every_token_of_the_range():
    from models.bounds import embedding_interval
    from models.layers import TargetLayer

    gen = torch.Generator().manual_seed(0)
    W = torch.randn(4, 10, generator=gen, dtype=torch.float64)
    E = torch.rand(4, 10, generator=gen, dtype=torch.float64)
    layer = TargetLayer("e", "embedding", W, None, True)
    lo, hi, delta = embedding_interval(layer, E, torch.full((1, 3), 2.0), torch.full((1, 3), 6.0))
    assert lo.shape == (1, 3, 4)
    for t in range(2, 7):
        assert torch.all(lo[0, 0] <= W[:, t]) and torch.all(W[:, t] <= hi[0, 0]) and torch.all(E[:, t] <= delta[0, 0])
    assert torch.equal(lo[0, 0], W[:, 2:7].amin(1)) and torch.equal(delta[0, 0], E[:, 2:7].amax(1))


def test_token_targets_from_the_cli(tmp_path, capsys):
    from models.cli import main

    from .nets import token_classifier

    path = tmp_path / "tok.pt"
    torch.save(token_classifier().state_dict(), path)
    out = tmp_path / "run"
    base = ["solve", str(path), "--arch", "module:tests.nets:token_classifier", "--input-shape", "5", "--data", "none",
            "--n", "8", "--no-progress"]
    assert main(base + ["--input-domain", "0,25", "--out", str(tmp_path / "bad")]) == 2
    assert "must be a range of ids within [0, 19]" in capsys.readouterr().err
    assert main(base + ["--input-domain", "tokens", "--out", str(out)]) == 0
    assert "every sequence of token ids in [0, 19]" in capsys.readouterr().out
    assert main(["verify", str(out)]) == 0
    assert "bit-exact: True" in capsys.readouterr().out
    torch.save(encoder_classifier().state_dict(), tmp_path / "enc.pt")
    assert main(["solve", str(tmp_path / "enc.pt"), "--arch", "module:tests.nets:encoder_classifier", "--input-shape",
                 "4,3", "--data", "none", "--input-domain", "tokens", "--out", str(tmp_path / "e")]) == 2
    assert "needs a target whose input is token ids" in capsys.readouterr().err


def test_graph_constants_position_ids_and_scaled_dot_product_attention():
    """Constants of the graph (a mask of ones, position ids from a buffer) are kept as they are and
    exact in the bound; an embedding of constant ids gets a pair; sdpa is decomposed into matmul and
    softmax; the bound exists and holds."""
    from .nets import sdpa_net

    c = _construct(sdpa_net, (4,), (0.0, 11.0), 21)
    kinds = {layer.name: (layer.kind, layer.reads_input) for layer in c.layers}
    assert kinds["words"] == ("embedding", True) and kinds["positions"] == ("embedding", False)
    assert not any(n.target is torch.nn.functional.scaled_dot_product_attention for n in c.folded.graph.nodes)
    assert unconstructed(c) == []
    assert_errors_from_masks(c)
    x = domain_samples((4,), (0.0, 11.0), 32, 1, tokens=True)
    with torch.no_grad():
        f = c.target.double()(x)
        assert torch.allclose(c.folded(x), f, atol=1e-12)
        assert float((f - c.pruned(x)).abs().max()) <= 1e-3 * float(f.max() - f.min())
    check = verify(c, None, samples=64, adversarial=4)
    assert check.bound_holds and check.adversarial_output_error <= check.certified_bound
    from models.bounds import certified_bound  # with exact pairs the constants add no error

    exact = [lambda layer=layer: (np.zeros(tuple(layer.weight.shape)), None if layer.bias is None else np.zeros(layer.d_out))
             for layer in c.layers]
    assert certified_bound(c.folded, c.layers, exact, c.domain.box((4,))).bound <= 1e-6


def test_hugging_face_bert_is_traced_and_constructed():
    """A tiny BERT (2 layers, hidden 128, 2 heads) through transformers' fx tracer: every parameter
    constructed, output within 1e-3 of its range at n = 21. Needs transformers < 5 (its fx tracer)."""
    pytest.importorskip("transformers.utils.fx", reason="transformers' fx tracer (transformers < 5) is not installed")
    import transformers

    def bert():
        torch.manual_seed(0)
        config = transformers.BertConfig(num_hidden_layers=2, hidden_size=128, num_attention_heads=2,
                                         intermediate_size=512, vocab_size=1000)
        return transformers.BertForSequenceClassification(config).eval()

    c = _construct(bert, (16,), (0.0, 999.0), 21, workers=2)
    assert unconstructed(c) == [] and c.domain.tokens
    check = verify(c, None, samples=62, adversarial=2)
    low, high = check.output_range_observed
    assert check.max_output_error <= 1e-3 * (high - low) and "layer_norm" in check.certified_bound_reason


def test_hugging_face_gpt2_is_traced_and_constructed():
    """A tiny GPT-2 (2 layers, n_embd 128, 2 heads): Conv1D as Linear, ids read reshaped, gelu_new's
    x ** 3, the causal mask made in place, tied input/output embeddings (two pairs): every parameter
    constructed, output within 1e-3 of its range at n = 21. transformers 4.57's GPT-2 builds its masks
    with vmap, which fx cannot trace; 4.44 traces it."""
    from .nets import tiny_gpt2

    c = _construct(tiny_gpt2, (16,), (0.0, 999.0), 21, workers=2)
    assert unconstructed(c) == [] and c.domain.tokens
    assert {layer.name for layer in c.layers} >= {"transformer.wte", "lm_head", "transformer.h.0.attn.c_attn"}
    check = verify(c, None, samples=62, adversarial=2)
    low, high = check.output_range_observed
    assert check.max_output_error <= 1e-3 * (high - low) and "layer_norm" in check.certified_bound_reason


def test_an_embedding_may_read_the_ids_reshaped():
    """GPT-2 reads input_ids.view(-1, T): the embedding still reads the input (token ids)."""
    from .nets import token_classifier

    c = _construct(lambda: token_classifier(norm=False, reshaped=True), (5,), (0.0, 19.0), 8)
    assert c.layers[0].kind == "embedding" and c.layers[0].reads_input and c.domain.tokens
    check = verify(c, None, samples=32, adversarial=2)
    assert check.bound_holds and check.max_output_error <= check.certified_bound


def test_integer_powers_are_kept_with_a_local_lipschitz_rule():
    """x ** p keeps the target's op; its rule (image, and p max|x|^(p-1) on the interval both values lie
    in) holds on random intervals, and the certified bound of a net with powers holds."""
    import torch.fx as fx

    from models.rules import activation_of as elementwise

    from .nets import power_net

    gm = fx.symbolic_trace(power_net())
    rules = [elementwise(n, dict(gm.named_modules())) for n in gm.graph.nodes if "pow" in n.name]
    assert [r.name for r in rules] == ["pow 3", "pow 2", "pow 3"]
    gen = torch.Generator().manual_seed(0)
    for rule in rules:
        lo = torch.randn(1000, generator=gen, dtype=torch.float64)
        hi = lo + torch.rand(1000, generator=gen, dtype=torch.float64)
        delta = 0.5 * torch.rand(1000, generator=gen, dtype=torch.float64)
        t = torch.rand(1000, generator=gen, dtype=torch.float64)
        a = lo + t * (hi - lo)  # the target's value, in [lo, hi]
        b = a + delta * (2 * torch.rand(1000, generator=gen, dtype=torch.float64) - 1)  # within delta of it
        low, high = rule.image(lo, hi)
        assert torch.all(low <= rule.fn(a)) and torch.all(rule.fn(a) <= high)
        assert torch.all((rule.fn(a) - rule.fn(b)).abs() <= rule.lipschitz_on(lo - delta, hi + delta) * delta)
    c = _construct(power_net, (4,), (-1.0, 1.0), 10)
    assert unconstructed(c) == []
    check = verify(c, None, samples=64, adversarial=4)
    assert check.certified_bound is not None and check.bound_holds
    assert check.adversarial_output_error <= check.certified_bound


def test_dead_code_elimination_keeps_in_place_ops():
    """Hugging Face traces are reduced to their logits by dead-code elimination; an in-place op whose
    value nobody reads (GPT-2's causal mask: full(...).masked_fill_(...)) must stay."""
    import torch.fx as fx

    from models.trace.frontend import mutates as _mutates

    def f(x):
        mask = torch.full((3,), -1e9)
        mask.masked_fill_(torch.arange(3) < 2, 0.0)
        return x + mask

    x = torch.zeros(2, 3)
    gm = fx.symbolic_trace(f)
    gm.graph.eliminate_dead_code(is_impure_node=_mutates)
    gm.recompile()
    assert torch.equal(gm(x), f(x))


def test_roll_is_kept_and_must_keep_the_batch_apart():
    """torch.roll (added as one Rule in models/rules/shape.py): the pruned network rolls as the target
    does, its errors and bound hold; rolling along dim 0 is refused."""
    from .nets import rolled

    with pytest.raises(UnsupportedModelError, match="roll over dims"):
        trace_target(rolled(batch_dim=True), input_nonneg=True)
    c = _construct(rolled, (2, 5, 5), (0.0, 1.0), 10)
    assert unconstructed(c) == []
    assert_errors_from_masks(c)
    check = verify(c, None, samples=64, adversarial=2)
    assert check.certified_bound is not None and check.bound_holds
    assert check.max_output_error <= check.certified_bound


@pytest.mark.parametrize("tokens", [3, 5])
def test_constant_embedding_beside_a_float_input_has_a_bound(tokens):
    """Position embeddings of a buffer arange(T) added to a float input: the certified bound is given
    and holds (it crashed with a size mismatch, or at T = 3 took the ids for a stacked batch)."""
    from functools import partial

    from .nets import float_with_positions

    c = _construct(partial(float_with_positions, tokens=tokens), (tokens, 4), (-1.0, 1.0), 10)
    assert unconstructed(c) == []
    check = verify(c, None, samples=64, adversarial=2)
    assert check.certified_bound is not None and check.bound_holds
    assert check.adversarial_output_error <= check.certified_bound
