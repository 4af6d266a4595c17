"""The Python API: the README's notebook example runs as written, and its ticket is the CLI's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import models
from models.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def _example() -> str:
    text = README.read_text()
    match = re.search(r"<!-- this block runs as a test: tests/test_api.py -->\n```python\n(.*?)```", text, re.DOTALL)
    assert match, "the README's Python example is missing"
    return match.group(1)


def test_the_readme_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = _example()
    assert len(code.strip().splitlines()) <= 12
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    ticket, again, net = scope["ticket"], scope["again"], scope["net"]
    err, bound = (float(v) for v in capsys.readouterr().out.split()[:2])
    assert 0 < err <= bound and err == ticket.report["max_output_error"]
    x = torch.rand(16, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(again.pruned(x), ticket.pruned(x))  # rebuilt bit for bit from seed and masks
    assert again.check.max_output_error == pytest.approx(err, rel=1e-12)
    assert main(["verify", str(tmp_path / "runs" / "notebook"), "--trust-pickled-target"]) == 0
    assert main(["verify", str(tmp_path / "runs" / "notebook")]) == 2  # a pickle is never loaded unasked


def test_a_ticket_built_with_an_arch_saves_its_state_dict(tmp_path):
    from .nets import width_mlp

    net = width_mlp(width=6, classes=3)
    ticket = models.build_ticket(net, (5,), (-1.0, 1.0), n=6, progress=False,
                                 arch="module:tests.nets:width_mlp(width=6, classes=3)")
    out = ticket.save(tmp_path / "run")
    assert main(["verify", str(out)]) == 0  # no pickle: the arch makes the module, the state_dict fills it
    again = models.load_ticket(out)
    assert again.report["target"]["arch"] == "module:tests.nets:width_mlp(width=6, classes=3)"
    with pytest.raises(TypeError, match="must be an nn.Module; got dict"):
        models.build_ticket({}, (5,))
