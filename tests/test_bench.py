"""The backends benchmark runs end to end in quick mode and writes its table, JSON and plot."""

from __future__ import annotations

import json

from models.cli import main


def test_bench_backends_quick(tmp_path, capsys):
    out = tmp_path / "bench"
    main(["bench", "backends", "--quick", "--m", "6", "10", "--backends", "mitm", "brute", "cpsat",
          "--budget", "0.1", "--repeats", "2", "--out", str(out)])
    payload = json.loads((out / "backends.json").read_text())
    assert (out / "backends.png").stat().st_size > 1000
    assert "| m | objective | backend |" in (out / "backends.md").read_text()
    rows = payload["rows"]
    assert {r["m"] for r in rows} == {6, 10}
    assert {r["backend"] for r in rows} == {"mitm", "brute", "cpsat"}
    for r in rows:
        assert r["better_than_exact"] == 0
        assert r["problems"] >= 3 and r["seconds_per_problem"] > 0
        if r["backend"] in ("mitm", "brute"):  # float-exact: every problem agrees
            assert r["agree"] == r["problems"]
    assert payload["machine"]["cores"] >= 1
    assert "wrote" in capsys.readouterr().out
