"""Verification time of a LeNet-5 ticket on 10,000 test images, phase by phase.

The target is a LeNet-5 trained on digits upsampled to 28x28 (cached), its ticket built at n = 21
(min-error, the defaults). Verification (what `lottery solve` and `lottery verify` run after the
construction) is timed ``--repeats`` times on the same ticket and data:

* float32: target and pruned network on every input (accuracy, agreement), with the one-input
  float64 timing that plans the rest;
* float64: the errors on the inputs with the largest float32 errors plus as many at random;
* certified bound: interval propagation and the linear relaxation (data-independent);
* adversarial: the search of the input box for a larger error.

Data: ``--data mnist:DIR`` (the 10,000 MNIST test images) where a user has it; otherwise the digits
test split upsampled to 28x28 and repeated to 10,000 images (the same pixels several times: the
time is what is measured; MNIST is not available offline here). Writes verification.md/.json.

    lottery bench verification               # 5 repeats
    lottery bench verification --quick       # 2 repeats on 2,000 images
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from .common import cli_main, command_line, machine_info, markdown_table, write_outputs

GOAL_SECONDS = 5.0
PHASES = ("float32", "float64", "certified_bound", "adversarial")


def _data(spec: str | None, count: int):
    """(dataset, description): MNIST's test split, or digits28's test split repeated to ``count``."""
    from models.data import Dataset, digits28, load_data

    if spec:
        data = load_data(spec)
        return data, f"{spec}: {len(data.x)} images"
    d = digits28("test")
    reps = -(-count // len(d.x))
    x, y = d.x.repeat(reps, 1, 1, 1)[:count], d.y.repeat(reps)[:count]
    return (Dataset(f"digits28 test x{reps}", x.contiguous(), y.contiguous(), d.domain),
            f"the digits28 test split ({len(d.x)} images) repeated to {count}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="2 repeats on 2,000 images")
    p.add_argument("--repeats", type=int, default=5, help="timed verifications (default 5; the median is reported)")
    p.add_argument("--data", help="mnist:DIR for the MNIST test split (default: digits28 repeated to 10,000)")
    p.add_argument("--n", type=int, default=21, help="coefficients per problem (default 21)")
    p.add_argument("--out", type=Path, default=Path("bench_out/verification"), help="output directory")


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.repeats < 1 or args.n < 1:
        raise ValueError(f"need --repeats >= 1 and --n >= 1; got {args.repeats}, {args.n}")
    from models.construct import ConstructOptions, construct
    from models.default import cached_digits_lenet5
    from models.target import load_target
    from models.verify import verify

    repeats = 2 if args.quick else args.repeats
    data, described = _data(args.data, 2000 if args.quick else 10000)
    target = load_target(cached_digits_lenet5(), "lenet5")
    start = time.perf_counter()
    c = construct(target, tuple(data.x.shape[1:]), data.domain, ConstructOptions.from_kwargs(n=args.n, progress=False))
    construct_seconds = time.perf_counter() - start
    runs = [verify(c, data) for _ in range(repeats)]
    median = {p: statistics.median(r["phase_seconds"][p] for r in runs) for p in PHASES}
    total = statistics.median(r["seconds"] for r in runs)
    last = runs[-1]
    table = [[p.replace("_", " "), f"{median[p]:.2f}", f"{min(r['phase_seconds'][p] for r in runs):.2f}",
              f"{max(r['phase_seconds'][p] for r in runs):.2f}", f"{runs[0]['phase_seconds'][p]:.2f}"] for p in PHASES]
    table.append(["**total**", f"**{total:.2f}**", f"{min(r['seconds'] for r in runs):.2f}",
                  f"{max(r['seconds'] for r in runs):.2f}", f"{runs[0]['seconds']:.2f}"])
    info = machine_info()
    met = total <= GOAL_SECONDS
    md = (f"# Verification of a LeNet-5 ticket (n = {args.n}) on {len(data.x)} images\n\n"
          f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}. Command: `{command_line()}`.\n"
          f"Data: {described}. Construction: {construct_seconds:.1f} s (not timed below). "
          f"Seconds, median (min, max) of {repeats} verifications of the same ticket, and the first (the one "
          f"`lottery solve` runs, in a process that has not verified before):\n\n"
          + markdown_table(["phase", "median s", "min", "max", "first"], table)
          + f"\nVerification <= {GOAL_SECONDS:g} s: {'met' if met else 'NOT met'} (median {total:.2f} s). "
          f"Errors in float64 on {last['float64_inputs']} of the {last['count']} inputs; max output error "
          f"{last['max_output_error']:.3g}, certified bound {last['certified_bound']:.3g}, agreement "
          f"{100 * last['agreement']:.2f}%, accuracy target / pruned {100 * last['accuracy']['target']:.2f}% / "
          f"{100 * last['accuracy']['pruned']:.2f}%.\n")
    payload = {"machine": info, "command": command_line(), "data": described, "inputs": len(data.x), "n": args.n,
               "repeats": repeats, "construct_seconds": construct_seconds, "median_phase_seconds": median,
               "median_seconds": total, "goal_seconds": GOAL_SECONDS, "goal_met": met,
               "runs": [{k: r[k] for k in ("seconds", "phase_seconds", "float64_inputs", "max_output_error",
                                           "certified_bound", "agreement", "accuracy")} for r in runs]}
    paths = write_outputs(args.out, "verification", payload, md)
    print(md)
    print(f"wrote {paths['md']}, {paths['json']}")
    return payload


def main(argv: list[str] | None = None) -> None:
    cli_main("lottery bench verification", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    main()
