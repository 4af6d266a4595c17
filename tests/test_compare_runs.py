"""The refactoring check (tests/compare_runs.py) sees a changed mask bit or figure and nothing else."""

from __future__ import annotations

import torch

from .compare_runs import differences


def test_differences_ignore_timings_and_see_one_bit():
    report = {"max_weight_error": 0.004, "solve_seconds": 8.1, "layers": [{"n": 21, "seconds": 1.0}],
              "materialised_check": {"float32_inputs": 42}, "machine": {"cpu": "a"},
              "adversarial_output_error": 0.0606}
    again = {"max_weight_error": 0.004, "solve_seconds": 9.7, "layers": [{"n": 21, "seconds": 2.0}],
             "materialised_check": {"float32_inputs": 72}, "machine": {"cpu": "b"},
             "adversarial_output_error": 0.0600}
    assert differences(report, again) == []
    assert differences(report, dict(again, max_weight_error=0.0041)) == ["/max_weight_error: 0.004 against 0.0041"]
    assert differences(report, dict(again, layers=[{"n": 22}])) == ["/layers[0]/n: 21 against 22"]
    bits = torch.tensor([3, 7], dtype=torch.uint8)
    flipped = bits.clone()
    flipped[1] ^= 4
    assert differences({"masks": [{"bits": bits}]}, {"masks": [{"bits": bits.clone()}]}) == []
    assert len(differences({"masks": [{"bits": bits}]}, {"masks": [{"bits": flipped}]})) == 1
    assert differences({"a": 1}, {"a": 1, "b": 2}) == ["/b: only in the second"]
