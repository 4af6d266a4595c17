"""TorchScript targets (scripted and traced) are rebuilt as fx graphs computing the same function."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from models.cli import main
from models.trace import trace_target
from models.target import TargetError, load_target
from models.torchscript import graph_module_from_script

from .nets import Repeated, ScaledOutput, WithSigmoid, dilated_cnn, forward_impl, tiny_cnn, tiny_mlp, tiny_resnet

TARGETS = {
    "mlp": (tiny_mlp, (4, 5)),
    "cnn-bn-residual": (tiny_cnn, (3, 2, 8, 8)),
    "resnet-block": (tiny_resnet, (3, 2, 8, 8)),
    "dilated-sequential": (dilated_cnn, (3, 2, 8, 8)),
    "forward-calls-methods": (forward_impl, (3, 2, 8, 8)),
}


def _compile(model, x, how):
    """Scripted or traced; '-saved': also written to a file and loaded back (a traced graph then
    no longer knows its tensors' ranks)."""
    import io

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.* is deprecated upstream; users still have such files
        compiled = torch.jit.script(model) if how.startswith("script") else torch.jit.trace(model, x)
        if how.endswith("-saved"):
            buffer = io.BytesIO()
            torch.jit.save(compiled, buffer)
            buffer.seek(0)
            compiled = torch.jit.load(buffer)
        return compiled


@pytest.mark.parametrize("how", ["script", "trace", "script-saved", "trace-saved"])
@pytest.mark.parametrize("name", list(TARGETS))
def test_rebuilt_graph_computes_the_same_function_with_the_same_layers(name, how):
    make, shape = TARGETS[name]
    model = make()
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    rebuilt = graph_module_from_script(_compile(model, x, how))
    assert torch.equal(rebuilt(x), model(x))
    folded_a, layers_a = trace_target(model, input_nonneg=False)
    folded_b, layers_b = trace_target(rebuilt, input_nonneg=False)
    assert [(l.name, l.kind, l.folded_bn, l.input_nonneg) for l in layers_a] == \
        [(l.name, l.kind, l.folded_bn, l.input_nonneg) for l in layers_b]
    for a, b in zip(layers_a, layers_b):
        assert torch.equal(a.weight, b.weight) and a.conv == b.conv
    assert torch.equal(folded_a(x.double()), folded_b(x.double()))


@pytest.mark.parametrize("model, message", [
    (WithSigmoid(), r"aten::sigmoid at .*op not supported"),
    (ScaledOutput(), r"uses its tensor 'scale' in aten::mul; only Linear, Conv2d and BatchNorm may hold parameters"),
    (Repeated(), r"prim::Loop at .*op not supported"),
])
def test_unsupported_scripted_modules_are_refused_with_the_op_and_line(tmp_path, model, message):
    path = tmp_path / "t.ts"
    _compile(model.eval(), None, "script").save(str(path))
    with pytest.raises(TargetError, match=message):
        load_target(path, None)


def test_lottery_solve_on_a_scripted_resnet_equals_the_state_dict_run(tmp_path):
    model = tiny_resnet()
    torch.save(model.state_dict(), tmp_path / "t.pt")
    _compile(model, None, "script").save(str(tmp_path / "t.ts"))
    common = ["--n", "4", "--input-shape", "2,8,8", "--no-progress"]
    assert main(["solve", str(tmp_path / "t.pt"), "--arch", "module:tests.nets:TinyResNet",
                 "--out", str(tmp_path / "a"), *common]) == 0
    assert main(["solve", str(tmp_path / "t.ts"), "--out", str(tmp_path / "b"), *common]) == 0
    a = json.loads((tmp_path / "a" / "report.json").read_text())
    b = json.loads((tmp_path / "b" / "report.json").read_text())
    assert [l["layer"] for l in a["layers"]] == [l["layer"] for l in b["layers"]] == \
        ["stem.0", "block.conv1", "block.conv2", "fc"]
    assert a["max_output_error"] == b["max_output_error"] and a["kept_params"] == b["kept_params"]
    assert main(["verify", str(tmp_path / "b")]) == 0
