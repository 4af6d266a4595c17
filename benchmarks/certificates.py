"""Tickets of two trained networks, judged as a user would: every weight within eps, accuracy and
agreement on test data, the certified bound against the adversarial error, and the kept count.

Targets: the Experiment 1 MLP 784-500-10 and a LeNet-5, both trained on digits upsampled to 28x28
(cached). For each, n = 21 with the default (balanced) layout:

* min-error (eps = 0.01 is the threshold the report counts weights against);
* min-size at eps = 0.01, balanced, and with ``fixed-sign`` (the layout before balanced) for the
  kept-count comparison; min-size with ``--n auto --scale-policy rms`` (the smallest kept count
  with every weight within eps found here).

Per row: kept / target parameters, weights missing eps, test accuracy of target and pruned network,
argmax agreement, the largest observed test error, the adversarial error (a proven lower bound on
the sup over the box), the certified bound (linear relaxation or interval propagation, whichever
is smaller per output), the interval bound alone and the ratio certified / adversarial; and the
local certificates at ``--radius`` (default 1/255): bound and found per ball, their ratio, the
certified agreement, how many balls were certified. Writes certificates.md and certificates.json.

    lottery bench certificates            # both networks (a few minutes)
    lottery bench certificates --quick    # the MLP's min-error and min-size rows only
"""

from __future__ import annotations

import argparse
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

from models.errors import UsageError

from .common import cli_main, command_line, machine_info, markdown_table, write_outputs

GOAL_RATIO = 10.0
CONFIGS = [
    ("min-error", dict(objective="min-error")),
    ("min-size", dict(objective="min-size")),
    ("min-size fixed-sign", dict(objective="min-size", layout="fixed-sign")),
    ("min-size n auto, rms", dict(objective="min-size", n="auto", scale_policy="rms")),
]


def _target(name: str):
    from models.default import cached_digits_lenet5
    from models.target import load_target

    from .exp1 import exp1_network

    shape = (1, 28, 28)  # the data's shape; the MLP flattens it first
    if name == "lenet5":
        return load_target(cached_digits_lenet5(), "lenet5"), shape
    return exp1_network(), shape


def measure(name: str, label: str, settings: dict[str, Any], n: int, eps: float, seed: int,
            radius: float | None = None) -> dict[str, Any]:
    from models.construct import ConstructOptions, construct
    from models.data import digits28
    from models.local import summary
    from models.report import eps_coverage
    from models.verify import verify

    target, shape = _target(name)
    start = time.perf_counter()
    options = ConstructOptions.from_kwargs(**{"n": n, "seed": seed, "eps": eps, "progress": False, **settings})
    c = construct(target, shape, (0.0, 1.0), options)
    check = verify(c, digits28("test"), radius=radius)
    cov = eps_coverage(c)
    target_params = sum(layer.num_params() for layer in c.layers)
    kept = sum(s.kept() for s in c.solutions)
    adv = check.adversarial_output_error
    row = {"network": name, "config": label, "n": [s.n for s in c.specs], "eps": eps,
           "target_params": target_params, "kept_params": kept, "kept_ratio": kept / target_params,
           "weights_missing_eps": cov["weights_missing_eps"], "accuracy": check.accuracy,
           "agreement": check.agreement, "max_output_error": check.max_output_error,
           "adversarial_output_error": adv, "certified_bound": check.certified_bound,
           "interval_bound": check.interval_bound, "bound_method": check.bound_method,
           "ratio": check.certified_bound / adv if adv > 0 else None, "bound_holds": check.bound_holds,
           "vacuous": check.vacuous, "local": summary(check.local_json()), "verify_seconds": check.seconds,
           "seconds": time.perf_counter() - start}
    print(f"{name} {label}: kept {row['kept_ratio']:.3f}x, {row['weights_missing_eps']} miss eps, "
          f"certified/adversarial {row['ratio']:.3g}x", file=sys.stderr, flush=True)
    return row


def _local_cells(r: dict[str, Any]) -> list[str]:
    """The table's local columns: bound and found (median / max), bound / found, agreement, certified / measured."""
    local = r["local"]
    if not local or "max_bound" not in local:
        return ["none"] * 5
    ratio = local["median_ratio"]
    agreement = local["certified_agreement"]
    return [f"{local['median_bound']:.3g} / {local['max_bound']:.3g}", f"{local['median_found']:.3g} / {local['max_found']:.3g}",
            "none" if ratio is None else f"{ratio:.3g}x", "none" if agreement is None else f"{100 * agreement:.1f}%",
            f"{local['inputs']} / {local['measured']}"]


def _radius(text: str) -> float | None:
    if text == "none":
        return None
    try:
        value = float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        value = -1.0
    if value < 0:
        raise argparse.ArgumentTypeError(f"a radius is a number >= 0, a fraction like 1/255, or none; got {text!r}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="the MLP's min-error and min-size rows only")
    p.add_argument("--n", type=int, default=21, help="coefficients per problem (default 21)")
    p.add_argument("--eps", type=float, default=0.01, help="eps (default 0.01)")
    p.add_argument("--seed", type=int, default=0, help="random network seed")
    p.add_argument("--radius", type=_radius, default=1 / 255,
                   help="l_inf radius of the local certificates around the test inputs (default 1/255; none: no local "
                        "certificates)")
    p.add_argument("--out", type=Path, default=Path("bench_out/certificates"), help="output directory")


def run(args: argparse.Namespace) -> dict[str, Any]:
    if not args.eps > 0 or args.n < 1:
        raise UsageError(f"need --eps > 0 and --n >= 1; got {args.eps}, {args.n}")
    networks = ["mlp"] if args.quick else ["mlp", "lenet5"]
    configs = CONFIGS[:2] if args.quick else CONFIGS
    rows = [measure(name, label, settings, args.n, args.eps, args.seed, args.radius) for name in networks
            for label, settings in configs]
    headers = ["network", "ticket", "n", "kept / target", "miss eps", "accuracy target / pruned", "agreement",
               "observed test error", "adversarial", "certified", "interval bound", "certified / adversarial",
               "local bound (median / max)", "local found (median / max)", "local bound / found (median)",
               "certified agreement", "balls certified / inputs", "verify s"]
    table = [[r["network"], r["config"], "/".join(map(str, r["n"])), f"{r['kept_ratio']:.3f}",
              r["weights_missing_eps"], f"{100 * r['accuracy']['target']:.2f}% / {100 * r['accuracy']['pruned']:.2f}%",
              f"{100 * r['agreement']:.2f}%", f"{r['max_output_error']:.3g}", f"{r['adversarial_output_error']:.3g}",
              f"{r['certified_bound']:.3g}" + (" (vacuous)" if r["vacuous"] else ""), f"{r['interval_bound']:.3g}",
              f"{r['ratio']:.3g}x", *_local_cells(r), f"{r['verify_seconds']:.1f}"] for r in rows]
    met = {r["network"] + " " + r["config"]: r["ratio"] is not None and r["ratio"] <= GOAL_RATIO for r in rows}
    md = [
        f"# Certificates of trained networks (n = {args.n}, eps = {args.eps:g}, seed {args.seed})\n\n",
        f"Machine: {machine_info()['cpu']}, {machine_info()['cores']} cores. Command: `{command_line()}`.\n\n",
        markdown_table(headers, table),
        f"\nCertified / adversarial <= {GOAL_RATIO:g}: "
        + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in met.items()) + ". The adversarial error is a "
        "lower bound on the sup over the input box [0, 1]^784, the certified bound an upper bound; the true sup "
        "lies between. 'observed test error' is the largest on the digits28 test split. The local columns: over the "
        f"l_inf ball of radius {args.radius if args.radius is None else f'{args.radius:.4g}'} around each test input "
        "(clipped to [0, 1]), the certified bound and the largest error a search inside the ball found (median and "
        "max over the balls certified: the largest test errors first, as many as fit 30 s), and the share of those "
        "balls whose argmax is proved the same for target and ticket.\n",
    ]
    payload = {"machine": machine_info(), "command": command_line(), "n": args.n, "eps": args.eps, "seed": args.seed,
               "radius": args.radius,
               "goal_ratio": GOAL_RATIO, "goal_met": met, "rows": rows}
    paths = write_outputs(args.out, "certificates", payload, "".join(md))
    print("".join(md))
    print(f"wrote {paths['md']}, {paths['json']}")
    return payload


def main(argv: list[str] | None = None) -> None:
    cli_main("lottery bench certificates", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    main()
