"""The backends benchmark runs end to end in quick mode and writes its table, JSON and plot."""

from __future__ import annotations

import json

import pytest

from models.cli import main


@pytest.mark.slow
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
    # the plot shows the table: every row is a point of its configuration's line in its objective's panel
    figure = payload["figure"]
    objectives = sorted({r["objective"] for r in rows}, key=["min-error", "min-size"].index)
    assert sum(len(line["x"]) for line in figure.values()) == len(rows)
    for r in rows:
        line = figure[f"{objectives.index(r['objective'])}: {r['config']}"]
        assert r["seconds_per_problem"] == line["y"][line["x"].index(r["m"])]


@pytest.mark.slow
def test_bench_exp1_small(tmp_path, monkeypatch):
    """The Experiment 1 pipeline on a narrow 784-H-10 target: runs 1 and 3 and the scaling table."""
    monkeypatch.setenv("LOTTERY_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "exp1"
    main(["bench", "exp1", "--hidden", "12", "--scaling-hidden", "6", "12", "--runs", "1", "3", "--n", "12",
          "--out", str(out)])
    payload = json.loads((out / "exp1.json").read_text())
    runs = {r["run"][0]: r for r in payload["runs"]}
    assert set(runs) == {"1", "3"}
    for r in runs.values():
        assert r["target_params"] == 784 * 12 + 12 * 10
        assert r["problems"] == r["target_params"]
        assert r["max_output_error"] <= r["certified_bound"]
        assert r["peak_mb"] > 0 and r["total_s"] >= r["solve_s"]
    # min-size: every weight within eps unless some problem had no subset within eps (and then not)
    misses = runs["3"]["status_counts"]["infeasible"] + runs["3"]["status_counts"]["feasible"]
    assert (runs["3"]["max_weight_error"] > 0.01) == (misses > 0)
    assert [s["target_params"] for s in payload["scaling"]] == [784 * 6 + 60, 784 * 12 + 120]
    assert (out / "exp1.png").stat().st_size > 1000
    lines = payload["figure"]  # the plot shows the scaling table
    assert lines["0: solve"] == {"x": [s["target_params"] for s in payload["scaling"]],
                                 "y": [s["solve_s"] for s in payload["scaling"]]}
    assert lines["0: end to end"]["y"] == [s["total_s"] for s in payload["scaling"]]
    assert "paper (official code)" in (out / "exp1.md").read_text()


def test_bench_bad_option_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["bench", "backends", "--backends", "nothing", "--out", str(tmp_path / "b")]) == 2
    assert "error: --backends ['nothing'] selects no installed backend" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_layouts_quick(tmp_path, monkeypatch):
    monkeypatch.setenv("LOTTERY_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "layouts"
    assert main(["bench", "layouts", "--quick", "--problems", "3000", "--out", str(out)]) == 0
    payload = json.loads((out / "layouts.json").read_text())
    synth = payload["synthetic"]
    assert [r["layout"] for r in synth] == ["fixed-sign", "balanced"]
    for r in synth:
        assert r["problems"] == 3000 and r["ci95"][0] <= r["miss_rate"] <= r["ci95"][1]
    line = payload["figure"]["0: miss rate (95% CI)"]  # the plot shows the table
    assert line["y"] == [r["miss_rate"] for r in synth]
    nets = payload["networks"]
    assert {(r["network"], r["layout"]) for r in nets} == {("lenet5", "fixed-sign"), ("lenet5", "balanced")}
    for r in nets:
        assert r["weights"] == 61706 and (r["misses"] > 0) == (r["max_weight_error"] > 0.01)


@pytest.mark.slow
def test_bench_coldstart_small(tmp_path):
    out = tmp_path / "cold"
    assert main(["bench", "coldstart", "--repeats", "1", "--problems", "20", "--m", "8", "--out", str(out)]) == 0
    payload = json.loads((out / "coldstart.json").read_text())
    rows = payload["rows"]
    assert [(r["objective"], r["cache"]) for r in rows] == [
        ("min-size", "compiled before"), ("min-size", "empty cache"),
        ("min-error", "compiled before"), ("min-error", "empty cache")]
    for r in rows:
        assert r["total"] == pytest.approx(r["import"] + r["first_call"], rel=1e-6)
        assert r["total_all"] == [r["total"]]
    goal_rows = [r for r in rows if r["cache"] == "compiled before" and r["objective"] == "min-size"]
    assert payload["goal_met"] == (goal_rows[0]["total"] <= payload["goal_seconds"])
    assert "| objective | numba cache |" in (out / "coldstart.md").read_text()


def test_bench_zoo_builds_or_refuses_each_model_and_plots_its_table(tmp_path, capsys):
    """Without torchvision: the transformer encoder is built (a row with its figures, in its own
    process), an unknown model is an error, a model whose package is missing is 'not run' with the
    reason; the plot's points are the table's figures."""
    import importlib.util

    out = tmp_path / "zoo"
    assert main(["bench", "zoo", "--models", "resnet9000", "--out", str(out)]) == 2
    assert "unknown zoo model" in capsys.readouterr().err
    assert main(["bench", "zoo", "--n", "0", "--out", str(out)]) == 2
    assert "must be an int >= 1 or auto; got '0'" in capsys.readouterr().err
    assert main(["bench", "zoo", "--n-max", "0", "--out", str(out)]) == 2
    assert "--n-max: must be an int >= 1; got '0'" in capsys.readouterr().err
    assert main(["bench", "zoo", "--models", "transformer_encoder,hf_bert_tiny", "--n", "auto", "--n-min", "4",
                 "--n-max", "6",
                 "--samples", "16", "--workers", "1", "--out", str(out)]) == 0
    payload = json.loads((out / "zoo.json").read_text())
    enc, bert = payload["rows"]
    assert enc["status"] == "ok" and enc["input_shape"] == [16, 32] and enc["unconstructed_params"] == 0
    low, high = map(int, enc["n"].removeprefix("auto (").removesuffix(")").split("-"))  # --n-min and --n-max reached the worker
    assert 4 <= low <= high <= 6 and enc["n_tried"][0] == 4 and enc["n_tried"][1] <= 6
    assert enc["target_params"] == 102_730 and enc["certified_bound"] is None and "layer_norm" in enc["bound_reason"]
    assert 0 < enc["relative_output_error"] < 1 and enc["peak_rss_mb"] > 0
    if importlib.util.find_spec("transformers") is None:
        assert bert["status"] == "not run" and "transformers" in bert["reason"]
    assert payload["plot"]["0: max output error / output range"]["y"] == [enc["relative_output_error"]]
    assert payload["plot"]["1: seconds end to end"] == {"x": [enc["target_params"]], "y": [enc["seconds"]]}
    assert (out / "zoo.png").stat().st_size > 0 and f"| transformer_encoder | 16x32 | auto ({low}-{high}) |" in (out / "zoo.md").read_text()
    # no model built (GPT-2 is not run or refused here): the table and an empty plot are still written
    assert main(["bench", "zoo", "--models", "hf_gpt2_tiny", "--n", "4", "--out", str(out / "none")]) == 0
    none = json.loads((out / "none" / "zoo.json").read_text())
    assert none["rows"][0]["status"] in ("not run", "refused", "failed")
    assert all(line == {"x": [], "y": []} for line in none["plot"].values())


@pytest.mark.slow
def test_bench_verification_reports_the_median_of_its_runs(tmp_path, monkeypatch):
    import models.verify as mv

    monkeypatch.setenv("LOTTERY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(mv, "FLOAT64_SECONDS", 1e9)  # every input in float64 however loaded the machine is
    out = tmp_path / "verification"
    assert main(["bench", "verification", "--repeats", "0", "--out", str(out)]) == 2
    assert main(["bench", "verification", "--quick", "--n", "6", "--out", str(out)]) == 0
    payload = json.loads((out / "verification.json").read_text())
    runs = payload["runs"]
    assert payload["inputs"] == 2000 and payload["repeats"] == len(runs) == 2
    for phase, median in payload["median_phase_seconds"].items():
        values = sorted(r["phase_seconds"][phase] for r in runs)
        assert median == pytest.approx((values[0] + values[1]) / 2)
    assert payload["goal_met"] == (payload["median_seconds"] <= payload["goal_seconds"])
    table = (out / "verification.md").read_text()
    assert f"**{payload['median_seconds']:.2f}**" in table
    for r in runs:  # every input's error in float64 (collapsed form), the materialised network checked against it
        mat = r["materialised"]
        assert r["float64_inputs"] == payload["inputs"] and r["max_output_error"] <= r["certified_bound"]
        assert mat["float32_inputs"] >= 8 and mat["float32_difference"] <= mat["tolerance"]["float32"]
        assert mat["float64_inputs"] >= 1 and mat["float64_difference"] <= mat["tolerance"]["float64"]


@pytest.mark.slow
def test_bench_solve_phase_times_the_construction_against_one_bare_call(tmp_path, monkeypatch):
    """A 784-12-10 MLP at n = 6: every problem of the construction reaches the bare call (pixels and
    ReLU outputs are >= 0: one problem per weight), the ratio is the phase over the bare call, the
    goal is read off the median, and the profile lists the functions by their own time."""
    monkeypatch.setenv("LOTTERY_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "sp"
    assert main(["bench", "solve-phase", "--repeats", "0", "--out", str(out)]) == 2
    assert main(["bench", "solve-phase", "--hidden", "12", "--n", "6", "--repeats", "2", "--profile",
                 "--out", str(out)]) == 0
    payload = json.loads((out / "solve_phase.json").read_text())
    for r in payload["runs"]:
        assert r["problems"] == 784 * 12 + 12 * 10
        assert r["ratio"] == pytest.approx(r["solve_phase_seconds"] / r["bare_seconds"])
    assert payload["goal_met"] == (payload["median"]["ratio"] <= payload["goal_ratio"])
    own = [float(row[1]) for row in payload["profile"]]
    assert own and own == sorted(own, reverse=True)  # the functions with the most own time first
    assert f"**{payload['median']['ratio']:.3f}**" in (out / "solve_phase.md").read_text()


@pytest.mark.slow
def test_bench_exp2_rows_finding_and_plot_follow_the_runs(tmp_path, monkeypatch):
    """A tiny Experiment 2 (fc2 networks, 2 sparsities, 2 seeds, 1 epoch, 2 worker processes; a
    narrow trained target for the constructed tickets): the rows keep the contract, a run is the
    same in a worker as here (seeded), the finding is the Welch interval of the rows, and the plot
    shows the table (means, standard deviations, constructed points)."""
    import statistics

    from benchmarks import exp2
    from models.default import cached_digits_mlp
    from models.target import load_target

    monkeypatch.setenv("LOTTERY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(exp2.QUICK, "sparsities", [0.5, 0.9])
    monkeypatch.setitem(exp2.QUICK, "seeds", [0, 1])
    monkeypatch.setitem(exp2.QUICK, "epochs", 1)
    monkeypatch.setitem(exp2.QUICK, "eps", [0.05])
    monkeypatch.setattr(exp2, "target_for", lambda arch: load_target(
        cached_digits_mlp([784, 12, 10], biases=False, upsample=True, epochs=20, batch=128, lr=1e-2), "mlp"))
    out = tmp_path / "exp2"
    assert main(["bench", "exp2", "--quick", "--jobs", "2", "--out", str(out)]) == 0
    payload = json.loads((out / "exp2.json").read_text())
    assert payload["jobs"] == 2 and payload["machine"]["cores"] >= 1 and payload["command"]
    rows = payload["rows"]
    popup = [r for r in rows if r["structure"] != "constructed"]
    built = [r for r in rows if r["structure"] == "constructed"]
    assert len(popup) == 3 * 2 * 2 and [r["eps"] for r in built] == [0.05, None]
    for r in popup:
        assert {"arch", "structure", "sparsity", "params", "kept", "accuracy", "seed"} <= set(r)
        assert ("relu" in r) == (r["structure"] == "redundant") and 0 <= r["accuracy"] <= 1
        assert r["kept"] == pytest.approx((1 - r["sparsity"]) * r["params"], rel=0.01)
    for r in built:
        assert {"arch", "structure", "eps", "params", "kept", "accuracy", "seed"} <= set(r)
    assert built[0]["kept"] <= built[1]["kept"] and built[1]["accuracy"] == pytest.approx(built[1]["target_accuracy"],
                                                                                           abs=0.01)
    # seeded: the run of a worker process is the same run here
    first = popup[0]
    again = exp2.popup_row(first["arch"], "redundant", first["relu"], first["sparsity"], first["seed"], 1, None,
                           "cpu", 1)
    assert again["accuracy"] == first["accuracy"] and again["kept"] == first["kept"]
    # the finding: redundant minus wide per sparsity, the Welch interval of the rows' accuracies
    wide = {s: [r["accuracy"] for r in popup if r["structure"] == "wide" and r["sparsity"] == s] for s in (0.5, 0.9)}
    assert len(payload["finding"]) == 4
    for arch, networks, sparsity, diff, interval, verdict in payload["finding"]:
        relu = "(ReLU)" in networks
        red = [r["accuracy"] for r in popup if r.get("relu") == relu and r["sparsity"] == float(sparsity)
               and r["structure"] == "redundant"]
        d, low, high = exp2.welch(red, wide[float(sparsity)])
        assert float(diff) == pytest.approx(100 * d, abs=0.006) and low <= d <= high
        assert verdict == ("redundant better" if low > 0 else "wide better" if high < 0 else "equal on every seed"
                           if low == high else "no difference resolved")
    # the plot shows the table
    figure = payload["figure"]
    for structure, relu in exp2.VARIANTS:
        line = figure[f"0: edge-popup, {exp2.label(structure, relu)}"]
        groups = [[r for r in popup if r["structure"] == structure and r.get("relu") == relu and r["sparsity"] == s]
                  for s in (0.5, 0.9)]
        assert line["x"] == [statistics.mean(r["kept"] for r in g) for g in groups]
        assert line["y"] == pytest.approx([statistics.mean(r["accuracy"] for r in g) for g in groups])
        assert line["yerr"] == pytest.approx([statistics.stdev(r["accuracy"] for r in g) for g in groups])
    assert figure["0: constructed (subset sum)"] == {"x": [r["kept"] for r in built], "y": [r["accuracy"] for r in built]}
    assert "| fc2 | wide | 0.9 |" in (out / "exp2.md").read_text() and (out / "exp2.png").stat().st_size > 1000


def test_bench_exp2_bad_jobs_is_one_line(tmp_path, capsys):
    assert main(["bench", "exp2", "--quick", "--jobs", "0", "--out", str(tmp_path / "e")]) == 2
    assert "--jobs must be >= 1; got 0" in capsys.readouterr().err


def test_bench_survey_traces_or_refuses_each_torchvision_model(tmp_path, capsys):
    """resnet18 traces (its 21 layers: 20 convolutions, the head), swin_t is refused naming its
    gathered table, a model over --max-params is skipped; the table is written; an unknown name is
    an error."""
    pytest.importorskip("torchvision", reason="lottery bench survey traces torchvision's models")
    out = tmp_path / "survey"
    assert main(["bench", "survey", "--models", "resnet9000", "--out", str(out)]) == 2
    assert "not torchvision models: ['resnet9000']" in capsys.readouterr().err
    assert main(["bench", "survey", "--models", "resnet18,swin_t,vgg16", "--max-params", "100e6",
                 "--out", str(out)]) == 0
    payload = json.loads((out / "survey.json").read_text())
    rows = {r["model"]: r for r in payload["rows"]}
    assert rows["resnet18"]["status"] == "traced" and rows["resnet18"]["layers"] == 21
    assert rows["swin_t"]["status"] == "refused" and "relative_position_bias_table" in rows["swin_t"]["reason"]
    assert rows["vgg16"]["status"] == "skipped" and rows["vgg16"]["params"] == 138_357_544
    assert payload["counts"] == {"traced": 1, "refused": 1, "skipped": 1}
    assert "| swin_t | 28.3 | refused |" in (out / "survey.md").read_text()


def test_certificates_bench_local_columns_show_the_rows_figures():
    import argparse

    from benchmarks.certificates import _local_cells, _radius

    local = {"median_bound": 8e-4, "max_bound": 2e-3, "median_found": 7e-5, "max_found": 1.3e-4, "median_ratio": 11.26,
             "certified_agreement": 0.978, "inputs": 279, "measured": 540}
    assert _local_cells({"local": local}) == ["0.0008 / 0.002", "7e-05 / 0.00013", "11.3x", "97.8%", "279 / 540"]
    assert _local_cells({"local": None}) == ["none"] * 5
    assert _local_cells({"local": {"reason": "token inputs have no ball"}}) == ["none"] * 5
    assert _radius("1/255") == 1 / 255 and _radius("0") == 0.0 and _radius("none") is None
    for bad in ("-1", "x", "1/0"):
        with pytest.raises(argparse.ArgumentTypeError, match="a radius is a number >= 0"):
            _radius(bad)
