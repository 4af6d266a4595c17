"""The typed results: one PrunedNetwork from construct and rebuild, the Verification and its JSON, the
CertifiedBound, and the InputDomain that owns boxes and token ranges."""

from __future__ import annotations

import json

import pytest
import torch

from models.bounds import CertifiedBound
from models.construct import construct
from models.data import DataError, Dataset
from models.domain import InputDomain
from models.errors import UsageError
from models.network import PrunedNetwork
from models.options import ConstructOptions
from models.ticket import rebuild, ticket_dict
from models.verify import Verification, check_inputs_for, verify

from .nets import tiny_mlp, token_classifier


def _mlp() -> PrunedNetwork:
    return construct(tiny_mlp(), (5,), (0.0, 1.0), ConstructOptions.from_kwargs(n=6, progress=False, workers=1))


def test_construct_and_rebuild_return_the_same_pruned_network():
    c = _mlp()
    desc = {"name": "t", "arch": "mlp", "file": "target.pt", "sha256": "0" * 64}
    ticket = ticket_dict(c, desc, check_inputs_for(None, (5,), c.domain, 0))
    r = rebuild(ticket, c.target)
    assert isinstance(c, PrunedNetwork) and isinstance(r, PrunedNetwork)
    assert r.domain == c.domain == InputDomain(0.0, 1.0) and r.specs == c.specs and r.seconds == {}
    for a, b in zip(c.solutions, r.solutions):  # the kept sums formed again from the masks, bit for bit
        assert all(torch.equal(x, y) for x, y in zip(a.sums, b.sums))
        assert (a.bias_sum is None and b.bias_sum is None) or torch.equal(a.bias_sum, b.bias_sum)
        assert b.backend == "ticket"
    x = ticket["check"]["inputs"]
    assert torch.equal(r.pruned(x), c.pruned(x))
    assert verify(r, None, samples=32).max_output_error == verify(c, None, samples=32).max_output_error


def test_verification_json_holds_every_figure_but_the_witness():
    check = verify(_mlp(), None, samples=32, adversarial=4)
    assert isinstance(check, Verification) and isinstance(check.certificate, CertifiedBound)
    out = json.loads(json.dumps(check.to_json()))  # plain JSON
    assert "witness" not in out and check.witness.shape == (1, 5)
    for key in ("max_output_error", "certified_bound", "interval_bound", "bound_method", "bound_holds",
                "adversarial_output_error", "count", "float64_inputs", "phase_seconds"):
        assert out[key] == getattr(check, key), key
    assert out["certified_bound"] == check.certificate.bound and check.bound_holds
    assert "accuracy" not in out and check.accuracy is None  # no labelled data: not given, not None in JSON
    quiet = verify(_mlp(), None, samples=32, adversarial=0)
    assert quiet.adversarial is None and "adversarial_output_error" not in quiet.to_json()


def test_no_bound_rule_gives_a_certificate_with_its_reason():
    none = CertifiedBound.none("no bound rule for group_norm")
    assert none.bound is None and none.interval_bound is None and none.reason == none.method
    assert none.to_json()["reason"] == "no bound rule for group_norm"


def test_the_input_domain_owns_boxes_and_token_ranges():
    with pytest.raises(UsageError, match=r"LO <= HI of finite numbers; got \[1.0, 0.0\]"):
        InputDomain(1.0, 0.0)
    box = InputDomain(-1, 1)
    assert box.to_json() == [-1.0, 1.0] and not box.tokens and not box.nonneg
    x = box.samples((3,), 10, seed=0)
    assert x.shape == (12, 3) and x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
    assert torch.equal(x[0], torch.full((3,), -1.0)) and torch.equal(x[1], torch.full((3,), 1.0))
    whole = box.box((3,))
    assert len(whole) == 1 and whole.lo.dtype == torch.float64 and float(whole.lo.max()) == -1.0
    balls = box.balls(torch.tensor([[0.0, 0.95, -1.0], [0.5, 0.5, 0.5]]), 0.1)  # clipped to the domain
    assert len(balls) == 2 and balls.input_shape == (3,)
    assert torch.allclose(balls.lo[0], torch.tensor([-0.1, 0.85, -1.0], dtype=torch.float64))
    assert torch.allclose(balls.hi[0], torch.tensor([0.1, 1.0, -0.9], dtype=torch.float64))
    with pytest.raises(DataError, match=r"values in \[-2, 0\], outside the declared input domain \[-1, 1\]"):
        box.check_data(Dataset("d", torch.tensor([[-2.0, 0.0]]), torch.zeros(1, dtype=torch.long), (-2.0, 0.0)))
    assert box.describe() == "the input box [-1.0, 1.0]"

    layers = construct(token_classifier(), (5,), (0.0, 19.0),
                       ConstructOptions.from_kwargs(n=4, progress=False, workers=1)).layers
    tokens = InputDomain.for_target((0.0, 19.0), layers)
    assert tokens.tokens and tokens.example((5,)).dtype == torch.long
    ids = tokens.samples((5,), 20, seed=1)
    assert ids.dtype == torch.long and int(ids.min()) >= 0 and int(ids.max()) <= 19
    assert tokens.describe() == "every sequence of token ids in [0, 19]"
    with pytest.raises(UsageError, match=r"must be a range of ids within \[0, 19\].*got \[0.0, 25.0\]"):
        InputDomain.for_target((0.0, 25.0), layers)
    with pytest.raises(UsageError, match=r"range of ids"):
        InputDomain.for_target((0.5, 3.0), layers)
    assert not InputDomain.for_target((0.0, 25.0), tiny_mlp_layers()).tokens  # a float input: a box


def tiny_mlp_layers():
    from models.trace import trace_target

    return trace_target(tiny_mlp(), input_nonneg=True)[1]
