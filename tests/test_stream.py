"""The random network regenerated block by block from the seed: the same values as drawn whole,
and tickets written before it rebuild bit-exactly."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from models.random_net import LayerSpec, generate, stream

TICKETS = Path(__file__).parent / "data" / "tickets_v3"


def _spec(**kw) -> LayerSpec:
    d = dict(name="l", kind="linear", d_in=6, d_out=10, kernel=(1, 1), stride=(1, 1), padding=(0, 0),
             dilation=(1, 1), n=5, layout="balanced", input_nonneg=False, has_bias=True, scale=0.7, seed=3)
    d.update(kw)
    return LayerSpec(**d)


SPECS = {
    "linear, signed, bias": _spec(),
    "linear, paper": _spec(layout="paper"),
    "linear, fixed-sign, non-negative input": _spec(layout="fixed-sign", input_nonneg=True),
    "linear, no bias": _spec(has_bias=False),
    "conv": _spec(kind="conv2d", kernel=(3, 3), const_tap=(1, 1)),
    "grouped conv": _spec(kind="conv2d", kernel=(3, 3), groups=2, const_tap=(1, 1)),
    "embedding": _spec(kind="embedding", d_in=9, has_bias=False),
}


@pytest.mark.parametrize("name", list(SPECS))
@pytest.mark.parametrize("blocks", [[slice(0, 10)], [slice(0, 3), slice(3, 4), slice(4, 10)],
                                    [slice(r, r + 1) for r in range(10)]], ids=["whole", "uneven", "rows"])
def test_the_values_streamed_by_block_are_the_values_drawn_whole(name, blocks):
    spec = SPECS[name]
    whole = generate(spec)
    parts = list(stream(spec, blocks))
    assert [p["first_row"] for p in parts] == [b.start for b in blocks]
    assert torch.equal(torch.cat([p["B"] for p in parts]), whole["B"])
    assert torch.equal(torch.cat([p["b_bias"] for p in parts]), whole["b_bias"])
    const = spec.const_index().reshape(-1)
    for p in parts:
        assert torch.equal(p["u"], whole["u"]) and torch.equal(p["a_bias"][const], whole["a_bias"][const])


def test_stream_blocks_must_follow_each_other_from_row_0():
    for blocks in ([slice(1, 10)], [slice(0, 4), slice(5, 10)], [slice(0, 11)]):
        with pytest.raises(ValueError, match="consecutive from row 0"):
            list(stream(SPECS["conv"], blocks))


@pytest.mark.parametrize("run", sorted(p.name for p in TICKETS.iterdir()))
def test_tickets_of_version_3_rebuild_bit_exactly(run, tmp_path, capsys):
    """Run directories written by lottery at commit c3f4695 (before the block-by-block random
    network): an MLP on a signed box, a grouped CNN with BatchNorm, a token model with an
    embedding and attention, a CNN of the paper's layout in the dense variant."""
    from models.cli import main

    shutil.copytree(TICKETS / run, tmp_path / run)
    assert main(["verify", str(tmp_path / run)]) == 0
    out = capsys.readouterr().out
    # bit-exact on the machine that wrote them; elsewhere CPU kernels may round float64 reductions
    # differently (seen: 1.1e-16 on an AVX2-only machine), which verify says and accepts
    assert ("bit-exact: True" in out or "float rounding, within" in out) and "verify: OK" in out


@pytest.mark.parametrize("shape", [(7, 5), (10, 3, 3, 3), (1, 9), (13, 1)])
def test_masks_packed_as_their_rows_come_read_back_as_they_were(shape):
    """MaskBuilder packs blocks of rows of any size (bits carried over between blocks); every slice
    of rows, the whole tensor and the count read back the bools."""
    from models.masks import MaskBuilder, PackedMask

    gen = torch.Generator().manual_seed(sum(shape))
    mask = torch.rand(shape, generator=gen) < 0.4
    built = MaskBuilder(shape)
    r = 0
    for step in (1, 3, 2, 5, 100):
        if r < shape[0]:
            built.add(mask[r:r + step].numpy())
            r = min(shape[0], r + step)
    packed = built.done()
    assert np.array_equal(packed.bits, PackedMask.of(mask).bits) and packed.nbytes == (mask.numel() + 7) // 8
    assert torch.equal(packed.tensor(), mask) and packed.sum() == int(mask.sum())
    for a in range(shape[0]):
        for b in range(a + 1, shape[0] + 1):
            assert torch.equal(packed.rows(slice(a, b)), mask[a:b])
    with pytest.raises(ValueError, match="has 0 of its rows"):
        MaskBuilder(shape).done()


@pytest.mark.parametrize("case", ["cnn-signed", "grouped", "tokens"])
def test_the_pruned_network_holds_masks_as_bits_and_regenerates_its_values(case, monkeypatch):
    """The fan-out variant's combine layers hold B's mask as bits and no random values, and compute
    bit for bit what the same pairs holding generate()'s values compute, whole or (both) a block of
    rows at a time (CAST_BLOCK small)."""
    import copy

    import models.pruned as pruned
    from models.construct import ConstructOptions, construct
    from models.random_net import generate
    from models.domain import domain_samples

    from . import nets

    make, shape, domain = {"cnn-signed": (nets.tiny_cnn, (2, 8, 8), (-1.0, 1.0)),
                           "grouped": (nets.grouped_cnn, (2, 8, 8), (-1.0, 1.0)),
                           "tokens": (nets.token_classifier, (5,), (0.0, 19.0))}[case]
    c = construct(make(), shape, domain, ConstructOptions.from_kwargs(n=5, progress=False, workers=1))
    held = copy.deepcopy(c.folded)
    for spec, sol in zip(c.specs, c.solutions):
        held.set_submodule(spec.name, pruned.TicketPair(spec, generate(spec), sol.masks))
    held.recompile()
    held = held.float().eval()
    assert len([m for m in c.pruned.modules() if isinstance(m, pruned._Regenerated)]) == len(c.specs)
    for spec in c.specs:
        m = c.pruned.get_submodule(spec.name).combine
        kh, kw = spec.kernel
        entries = spec.d_out * spec.hidden_group * kh * kw
        assert not list(m.parameters()) and m.weight_bits.numel() == (entries + 7) // 8
    x = domain_samples(shape, domain, 16, 0, tokens=case == "tokens")
    with torch.no_grad():
        assert torch.equal(c.pruned(x), held(x))
        monkeypatch.setattr(pruned, "CAST_BLOCK", 7)  # both a few rows at a time
        assert torch.equal(c.pruned(x), held(x))


def test_a_rebuild_off_by_more_than_float_rounding_fails(tmp_path, capsys):
    """Stored outputs moved by 1e-6 (what a wrong value or mask would do, far less than one bit does):
    verify says 'more than float rounding' and exits 1."""
    from models.cli import main

    run = tmp_path / "tokens"
    shutil.copytree(TICKETS / "tokens", run)
    ticket = torch.load(run / "ticket.pt", weights_only=True)
    ticket["check"]["outputs"][0, 0] += 1e-6
    torch.save(ticket, run / "ticket.pt")
    report = json.loads((run / "report.json").read_text())  # the report records the ticket's hash
    report["ticket_sha256"] = hashlib.sha256((run / "ticket.pt").read_bytes()).hexdigest()
    (run / "report.json").write_text(json.dumps(report))
    assert main(["verify", str(run)]) == 1
    out = capsys.readouterr().out
    assert "more than float rounding" in out and "verify: FAILED" in out
