"""Verification time of a ticket, phase by phase, beside the time the construction took to solve.

Targets (``--target``):

* ``lenet5`` (default): a LeNet-5 trained on digits upsampled to 28x28 (cached), verified on 10,000
  test images. Data: ``--data mnist:DIR`` (the MNIST test images) where a user has it; otherwise the
  digits test split upsampled to 28x28 and repeated to 10,000 images (the same pixels several
  times: the time is what is measured; MNIST is not available offline here).
* ``resnet20``: the classic CIFAR-10 ResNet-20 (:class:`models.zoo.CifarResNet`, 269,722 weights,
  option-A shortcuts) with seeded random weights and BatchNorm statistics (no CIFAR-10 offline:
  the cost depends on the shapes, not on the training), verified on 512 samples of the input box
  [-1, 1]^(3x32x32).

The ticket is built at ``--n`` (default 21, min-error, the defaults: every core). Verification (what
`lottery solve` and `lottery verify` run after the construction) is timed ``--repeats`` times on the
same ticket:

* collapse: the kept sums of every pair, from the masks and the regenerated random values, and the
  collapsed network (each pair as a target-shaped layer of its kept sums, :mod:`models.collapsed`);
* float32: target and collapsed form on every input when float64 on all would exceed its time;
* float64: the errors, on the collapsed form;
* certified bound: interval propagation and the linear relaxation (data-independent);
* materialised: the real pruned network (random values times masks) in float32 on the inputs that
  fit its time and in float64 on a few, checked against the collapsed form;
* adversarial: the search of the input box for a larger error (on the collapsed form).

The last two share what is left of half the solve time (:data:`models.verify.VERIFY_SHARE`).

Goals: LeNet-5 verification <= 5 s; ResNet-20 verification <= 0.5 x the solve time. Writes
verification[_resnet20].md/.json.

    lottery bench verification                      # LeNet-5, 5 repeats
    lottery bench verification --target resnet20     # ResNet-20, 5 repeats
    lottery bench verification --quick              # 2 repeats (LeNet-5: on 2,000 images)
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from models.errors import UsageError

from .common import cli_main, command_line, machine_info, markdown_table, write_outputs

GOAL_SECONDS = 5.0  # LeNet-5
GOAL_SOLVE_RATIO = 0.5  # ResNet-20: verification / solve
RESNET_SAMPLES = 512
PHASES = ("collapse", "float32", "float64", "certified_bound", "materialised", "adversarial")


def resnet20(seed: int = 0):
    """A CIFAR-10 ResNet-20 with seeded random weights and BatchNorm statistics, in eval mode."""
    import torch

    from models.zoo import CifarResNet

    torch.manual_seed(seed)
    net = CifarResNet(20)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return net.eval()


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
    p.add_argument("--target", choices=("lenet5", "resnet20"), default="lenet5",
                   help="lenet5 (trained on digits, 10,000 images) or resnet20 (CIFAR shapes, 512 box samples)")
    p.add_argument("--quick", action="store_true", help="2 repeats (LeNet-5: on 2,000 images)")
    p.add_argument("--repeats", type=int, default=5, help="timed verifications (default 5; the median is reported)")
    p.add_argument("--data", help="mnist:DIR for the MNIST test split (default: digits28 repeated to 10,000)")
    p.add_argument("--n", type=int, default=21, help="coefficients per problem (default 21)")
    p.add_argument("--out", type=Path, default=Path("bench_out/verification"), help="output directory")


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.repeats < 1 or args.n < 1:
        raise UsageError(f"need --repeats >= 1 and --n >= 1; got {args.repeats}, {args.n}")
    from models.construct import ConstructOptions, construct
    from models.default import cached_digits_lenet5
    from models.target import load_target
    from models.verify import verify

    repeats = 2 if args.quick else args.repeats
    if args.target == "lenet5":
        data, described = _data(args.data, 2000 if args.quick else 10000)
        target, shape, domain = load_target(cached_digits_lenet5(), "lenet5"), tuple(data.x.shape[1:]), data.domain
        title = f"a LeNet-5 ticket (n = {args.n}) on {len(data.x)} images"
    else:
        data, shape, domain = None, (3, 32, 32), (-1.0, 1.0)
        described = f"{RESNET_SAMPLES} seeded samples of the box [-1, 1]^(3x32x32) and its two corners"
        target, title = resnet20(), f"a CIFAR ResNet-20 ticket (n = {args.n}, random weights) on {RESNET_SAMPLES + 2} inputs"
    start = time.perf_counter()
    c = construct(target, shape, domain, ConstructOptions.from_kwargs(n=args.n, progress=False))
    construct_seconds = time.perf_counter() - start
    solve_seconds = c.seconds["solve"]
    runs = [verify(c, data, samples=RESNET_SAMPLES) for _ in range(repeats)]
    median = {p: statistics.median(r.phase_seconds.get(p, 0.0) for r in runs) for p in PHASES}
    total = statistics.median(r.seconds for r in runs)
    last = runs[-1]
    table = [[p.replace("_", " "), f"{median[p]:.2f}", f"{min(r.phase_seconds.get(p, 0.0) for r in runs):.2f}",
              f"{max(r.phase_seconds.get(p, 0.0) for r in runs):.2f}", f"{runs[0].phase_seconds.get(p, 0.0):.2f}"]
             for p in PHASES]
    table.append(["**total**", f"**{total:.2f}**", f"{min(r.seconds for r in runs):.2f}",
                  f"{max(r.seconds for r in runs):.2f}", f"{runs[0].seconds:.2f}"])
    info = machine_info()
    goal_seconds = GOAL_SECONDS if args.target == "lenet5" else GOAL_SOLVE_RATIO * solve_seconds
    met = total <= goal_seconds
    if args.target == "lenet5":
        goal = f"Verification <= {GOAL_SECONDS:g} s: {'met' if met else 'NOT met'} (median {total:.2f} s)."
    else:
        goal = (f"Verification <= {GOAL_SOLVE_RATIO:g} x the solve time ({solve_seconds:.2f} s): "
                f"{'met' if met else 'NOT met'} (median {total:.2f} s = {total / solve_seconds:.2f} x).")
    mat = last.materialised
    accuracy = (f", accuracy target / pruned {100 * last.accuracy['target']:.2f}% / "
                f"{100 * last.accuracy['pruned']:.2f}%" if last.accuracy is not None else "")
    bound = "none" if last.certified_bound is None else f"{last.certified_bound:.3g}"
    md = (f"# Verification of {title}\n\n"
          f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}. Command: `{command_line()}`.\n"
          f"Data: {described}. Construction: {construct_seconds:.1f} s, of which solving {solve_seconds:.1f} s "
          f"(not timed below). Seconds, median (min, max) of {repeats} verifications of the same ticket, and the "
          f"first (the one `lottery solve` runs, in a process that has not verified before):\n\n"
          + markdown_table(["phase", "median s", "min", "max", "first"], table)
          + f"\n{goal} Errors in float64 on {last.float64_inputs} of the {last.count} inputs (collapsed form); "
          f"max output error {last.max_output_error:.3g}, certified bound {bound}, agreement "
          f"{100 * last.agreement:.2f}%{accuracy}. The materialised network: float32 on {mat['float32_inputs']} "
          f"inputs, largest difference from the collapsed form {mat['float32_difference']:.3g} (tolerance "
          f"{mat['tolerance']['float32']:.3g}); float64 on {mat['float64_inputs']}, {mat['float64_difference']:.3g}.\n")
    payload = {"machine": info, "command": command_line(), "target": args.target, "data": described,
               "inputs": last.count, "n": args.n, "repeats": repeats, "construct_seconds": construct_seconds,
               "solve_seconds": solve_seconds, "median_phase_seconds": median, "median_seconds": total,
               "goal": goal, "goal_seconds": goal_seconds, "goal_met": met,
               "runs": [{k: r.to_json().get(k) for k in ("seconds", "phase_seconds", "float64_inputs", "max_output_error",
                                               "certified_bound", "agreement", "accuracy", "materialised")}
                        for r in runs]}
    paths = write_outputs(args.out, "verification" + ("" if args.target == "lenet5" else f"_{args.target}"), payload, md)
    print(md)
    print(f"wrote {paths['md']}, {paths['json']}")
    return payload


def main(argv: list[str] | None = None) -> None:
    cli_main("lottery bench verification", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    main()
