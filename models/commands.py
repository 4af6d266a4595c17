"""`lottery solve` and `lottery verify`: argument handling around :mod:`models.pipeline`."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

from . import pipeline
from .construct import ConstructOptions
from .data import load_data
from .target import TargetError, load_target

SOLVE_DESCRIPTION = """\
Construct the random network of the strong lottery ticket theorem for a target (twice as deep,
n hidden units per input and per sign), solve one subset-sum problem per target weight and
bias, assemble the pruned random network in torch, verify it against the target and write
DIR/report.json, report.md, weight_errors.png, ticket.pt (rebuild with `lottery verify DIR`),
pruned_state_dict.pt (plain weights) and, with --export, pruned.pt2 (a torch.export
program: torch.export.load(path).module() needs torch alone).

With no TARGET it runs the embedded default: a 64-32-10 MLP trained (seconds, cached) on
scikit-learn's digits, verified on the digits test split.
"""


def add_solve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", nargs="?", type=Path,
                   help="target file: state_dict (.pt/.pth/.safetensors, with --arch) or TorchScript (scripted or traced); "
                        "omitted: the embedded digits default")
    p.add_argument("--arch", help="mlp | lenet5 | module:pkg.mod:Class | full (pickled module you trust); "
                                  "omit for TorchScript")
    p.add_argument("--n", type=int, default=21, help="coefficients per subset-sum problem (default 21, as the paper)")
    p.add_argument("--objective", choices=["min-error", "min-size"], default="min-error",
                   help="min-error: closest subset; min-size: fewest kept weights within --eps (default min-error)")
    p.add_argument("--eps", type=float, help="weight error tolerance (required for min-size)")
    p.add_argument("--backend", default="auto", help="auto | mitm | cpsat | gurobi | brute (default auto)")
    p.add_argument("--data", help="digits | digits28 (digits upsampled to 28x28) | mnist:DIR | none "
                                  "(default: digits for the embedded target, else none)")
    p.add_argument("--normalize", help="MEAN,STD applied to MNIST pixels after scaling to [0,1]")
    p.add_argument("--input-domain", help="nonneg (= [0,1]) | signed (= [-1,1]) | LO,HI: the box the certified "
                                          "bound covers (default: the data's range, else nonneg)")
    p.add_argument("--input-shape", help="C,H,W or D: input shape without the batch dimension (default: from the "
                                         "data, 1,28,28 for lenet5, the first weight's width for mlp)")
    p.add_argument("--out", type=Path, help="output directory (default runs/<target name>)")
    p.add_argument("--seed", type=int, default=0, help="random network seed (default 0)")
    p.add_argument("--layout", choices=["fixed-sign", "paper"], default="fixed-sign",
                   help="fixed-sign: n units per sign group, B scaled to the layer; paper: all i.i.d. U[-1,1]")
    p.add_argument("--variant", choices=["fanout", "dense"], default="fanout",
                   help="fanout: materialise only A's kept block; dense: the theorem's full random A")
    p.add_argument("--scale-policy", choices=["max", "rms"], default="max",
                   help="B ~ U[-s,s] with s = margin * the layer's largest |weight or bias| (max, default) or "
                        "their root mean square (rms: denser coefficients near typical weights, smaller tickets)")
    p.add_argument("--scale-margin", type=float,
                   help="the margin of --scale-policy (default 1.5 for max, 5 for rms)")
    p.add_argument("--workers", type=int, help="CPU cores for the solver (default all)")
    p.add_argument("--time-limit", type=float, help="seconds per problem for cpsat/gurobi")
    p.add_argument("--resolution", type=float, help="cpsat integer resolution (default from eps)")
    p.add_argument("--device", default="cpu", help="mitm device: cpu | cuda[:i]")
    p.add_argument("--no-presolve", action="store_true",
                   help="send every problem to the backend (min-size otherwise settles subsets of <= 2 ones exactly first)")
    p.add_argument("--export", action="store_true",
                   help="also write pruned.pt2, a torch.export program of the pruned network (adds seconds)")
    p.add_argument("--executor", choices=["local", "dask"], default="local",
                   help="local worker processes (default) or a dask.distributed cluster (--scheduler)")
    p.add_argument("--scheduler", help="dask scheduler address, e.g. tcp://10.0.0.5:8786")
    p.add_argument("--chunk-size", type=int, help="problems per unit of parallel work (default per backend)")
    p.add_argument("--block-problems", type=int, default=1 << 17,
                   help="problems built and held in memory at once per layer (default 131072): memory is "
                        "bounded by this, not by the network")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in --out (rerunning into the same directory does too); "
                        "refused if the configuration differs")
    p.add_argument("--force", action="store_true", help="replace an output directory holding a different run")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _parse_floats(text: str, what: str, count: int | None = None) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        raise SystemExit(f"error: {what} must be comma-separated numbers; got {text!r}")
    if count is not None and len(vals) != count:
        raise SystemExit(f"error: {what} needs {count} numbers; got {text!r}")
    return vals


def _domain(arg: str | None, data) -> tuple[float, float]:
    if arg is None:
        return data.domain if data is not None else (0.0, 1.0)
    if arg == "nonneg":
        return (0.0, 1.0)
    if arg == "signed":
        return (-1.0, 1.0)
    lo, hi = _parse_floats(arg, "--input-domain", 2)
    if lo > hi:
        raise SystemExit(f"error: --input-domain LO,HI needs LO <= HI; got {arg!r}")
    return (lo, hi)


def _input_shape(arg: str | None, data, arch: str | None, model: torch.nn.Module) -> tuple[int, ...]:
    if arg is not None:
        return tuple(int(v) for v in _parse_floats(arg, "--input-shape"))
    if data is not None:
        return tuple(data.x.shape[1:])
    if arch == "lenet5":
        return (1, 28, 28)
    for mod in model.modules():
        if isinstance(mod, torch.nn.Linear):
            return (mod.in_features,)
        if isinstance(mod, torch.nn.Conv2d):
            break
    raise SystemExit("error: cannot infer the input shape of this target; pass --input-shape C,H,W or --data")


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def run_solve(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    if args.n < 1:
        return _fail(f"--n must be an integer >= 1; got {args.n}")
    if args.objective == "min-size" and args.eps is None:
        return _fail("--objective min-size needs --eps (the largest allowed weight error)")
    embedded = args.target is None
    if embedded:
        from .default import DEFAULT_SIZES, default_target

        if args.arch not in (None, "mlp"):
            return _fail("the embedded default target is an mlp; pass a TARGET file to use --arch")
        print("training/loading the embedded default: MLP "
              f"{'-'.join(map(str, DEFAULT_SIZES))} on scikit-learn digits ...", file=sys.stderr)
        target_file, arch = default_target(), "mlp"
        data_spec = args.data or "digits"
        name = "digits-default"
    else:
        target_file, arch = args.target, args.arch
        data_spec = args.data
        name = args.target.stem
    normalize = _parse_floats(args.normalize, "--normalize", 2) if args.normalize else None
    try:
        model = load_target(target_file, arch)
        data = load_data(data_spec, tuple(normalize) if normalize else None)
    except (TargetError, ValueError) as exc:
        return _fail(str(exc))
    input_shape = _input_shape(args.input_shape, data, arch, model)
    domain = _domain(args.input_domain, data)
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    except Exception as exc:
        return _fail(f"inputs of shape {input_shape} do not fit the target ({type(exc).__name__}: "
                     f"{str(exc).splitlines()[0]})")
    solver_options: dict[str, Any] = {}
    for key in ("time_limit", "resolution"):
        if getattr(args, key) is not None:
            solver_options[key] = getattr(args, key)
    if args.device != "cpu":
        solver_options["device"] = args.device
    if args.no_presolve:
        solver_options["presolve"] = False
    if args.executor != "local":
        solver_options["executor"] = args.executor
        solver_options["scheduler"] = args.scheduler
    if args.chunk_size is not None:
        solver_options["chunk_size"] = args.chunk_size
    options = ConstructOptions(n=args.n, objective=args.objective, eps=args.eps, backend=args.backend, seed=args.seed,
                               layout=args.layout, scale_policy=args.scale_policy, scale_margin=args.scale_margin, workers=args.workers,
                               solver_options=solver_options, progress=False if args.no_progress else None,
                               block_problems=args.block_problems)
    out_dir = args.out or Path("runs") / name
    target_desc = {"name": name, "arch": arch, "source": str(target_file), "sha256": pipeline.file_sha256(Path(target_file))}
    # what determines the result (not: workers, executor, progress: results are identical across them)
    same_result = {k: v for k, v in vars(options).items() if k not in ("progress", "workers")}
    same_result["solver_options"] = {k: v for k, v in options.solver_options.items() if k not in ("executor", "scheduler")}
    config = {"target_sha256": target_desc["sha256"], "arch": arch, "options": same_result,
              "variant": args.variant, "input_domain": list(domain), "input_shape": list(input_shape), "data": data_spec,
              "normalize": normalize}
    existed = out_dir.exists()
    try:
        pipeline.prepare_run_dir(out_dir, config, args.force, args.resume)
        store = pipeline.open_store(out_dir, config)
        construction = pipeline.construct(model, input_shape, domain, options, args.variant, store=store)
        check = pipeline.verify(construction, data)
    except Exception as exc:  # every library error carries a message meant for the user
        from solver import SolverError

        from .graph import UnsupportedModelError

        if not existed and not any((out_dir / pipeline.CHUNKS_DIR).glob("*.sha256")):
            shutil.rmtree(out_dir, ignore_errors=True)  # nothing solved yet: leave nothing behind
        if isinstance(exc, (SolverError, UnsupportedModelError, ValueError)):
            return _fail(str(exc))
        raise
    report = pipeline.build_report(construction, check, target_desc=target_desc, data_spec=data_spec,
                                   total_seconds=time.perf_counter() - start)
    check_inputs = pipeline.check_inputs_for(data, input_shape, domain, args.seed)
    pipeline.save_run(out_dir, construction, report, Path(target_file), config, check_inputs, export=args.export)
    report["seconds"]["total"] = time.perf_counter() - start
    print_summary(json.loads((out_dir / "report.json").read_text()) | {"seconds": report["seconds"]})
    print(f"report: {out_dir / 'report.md'}  (ticket: {out_dir / 'ticket.pt'}; re-check with `lottery verify {out_dir}`)")
    if not check["bound_holds"]:
        print("error: an observed error exceeds the certified bound; this is a bug, please report it", file=sys.stderr)
        return 1
    return 0


def print_summary(r: dict[str, Any]) -> None:
    rows = [
        ("target params", f"{r['target_params']:,}"),
        ("random params (dense)", f"{r['random_params']:,}"),
        ("kept params", f"{r['kept_params']:,} ({r['kept_params'] / max(r['target_params'], 1):.3g}x target)"),
        ("max weight error", f"{r['max_weight_error']:.3g}"),
        ("max output error", f"{r['max_output_error']:.3g} on {r['verified_on']}"),
        ("certified bound", f"{r['certified_bound']:.3g} over inputs in {r['input_domain']}"),
    ]
    if "accuracy" in r:
        rows.append(("accuracy target/pruned", f"{100 * r['accuracy']['target']:.2f}% / {100 * r['accuracy']['pruned']:.2f}%"))
    if "agreement" in r:
        rows.append(("argmax agreement", f"{100 * r['agreement']:.2f}%"))
    sc = r["status_counts"]
    rows.append(("statuses", f"{sc['optimal']} optimal, {sc['feasible']} feasible, {sc['infeasible']} infeasible "
                             f"({r.get('presolved', 0)} by exact presolve)"))
    rows.append(("seconds", f"solve {r['seconds']['solve']:.2f}, total {r['seconds']['total']:.2f}"))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")


def add_verify_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, help="a directory written by `lottery solve`")
    p.add_argument("--data", help="override the data used for re-verification (digits | mnist:DIR | none)")


def run_verify(args: argparse.Namespace) -> int:
    """Rebuild the pruned network from the ticket, check bit-exact outputs, re-verify."""
    run_dir = args.run_dir
    ticket_path = run_dir / "ticket.pt"
    if not ticket_path.is_file():
        return _fail(f"{str(run_dir)!r} holds no ticket.pt; is it a `lottery solve` output directory?")
    ticket = torch.load(ticket_path, map_location="cpu", weights_only=True)
    report = json.loads((run_dir / "report.json").read_text())
    target_file = run_dir / ticket["target"]["file"]
    model = load_target(target_file, ticket["target"]["arch"])
    rebuilt = pipeline.rebuild(ticket, model)
    with torch.no_grad():
        outputs = rebuilt.pruned(ticket["check"]["inputs"])
    exact = torch.equal(outputs, ticket["check"]["outputs"])
    print(f"rebuilt {len(rebuilt.specs)} pairs from {ticket_path}; outputs on {len(outputs)} stored inputs bit-exact: {exact}")
    data_spec = args.data if args.data is not None else report.get("data")
    normalize = report.get("config", {}).get("normalize")
    data = load_data(data_spec, tuple(normalize) if normalize else None)
    construction = _rebuilt_construction(model, rebuilt, ticket, ConstructOptions(**ticket["options"]))
    check = pipeline.verify(construction, data)
    same = abs(check["max_output_error"] - report["max_output_error"]) <= 1e-12 * (1 + report["max_output_error"])
    print(f"max output error {check['max_output_error']:.3g} (report: {report['max_output_error']:.3g}), "
          f"certified bound {check['certified_bound']:.3g}, bound holds: {check['bound_holds']}")
    if "accuracy" in check:
        print(f"accuracy target/pruned {100 * check['accuracy']['target']:.2f}% / {100 * check['accuracy']['pruned']:.2f}%")
    ok = exact and check["bound_holds"] and (same or args.data is not None)
    print("verify: OK" if ok else "verify: FAILED")
    return 0 if ok else 1


def _rebuilt_construction(model, rebuilt, ticket, options):
    """A Construction whose layer errors are recomputed from the rebuilt masks (not the report)."""
    from .construct import LayerSolution

    sols = []
    for layer, spec, values, masks in zip(rebuilt.layers, rebuilt.specs, rebuilt.values, rebuilt.masks):
        we, be = recompute_errors(layer, spec, values, masks)
        sols.append(LayerSolution(masks=masks, weight_error=we, bias_error=be, status_counts={}, seconds=0.0,
                                  backend="ticket", problems=0))
    return pipeline.Construction(target=model, folded=rebuilt.folded, layers=rebuilt.layers, specs=rebuilt.specs,
                                 solutions=sols, pruned=rebuilt.pruned, input_shape=tuple(ticket["input_shape"]),
                                 domain=tuple(ticket["input_domain"]), options=options, variant=ticket["variant"],
                                 seconds={})


def recompute_errors(layer, spec, values, masks):
    """Per-weight errors max over sign groups, from the masks alone (float64)."""
    import numpy as np

    from .random_net import groups

    upi = spec.units_per_input
    n_fan = spec.d_in * upi
    kh, kw = spec.kernel
    B = values["B"].double()
    Bm = masks["B"]
    if spec.kind == "linear":
        B, Bm = B[:, :, None, None], Bm[:, :, None, None]
    u = values["u"].double()
    C = B[:, :n_fan].reshape(spec.d_out, spec.d_in, upi, kh, kw) * u[None, :, :, None, None]
    K = Bm[:, :n_fan].reshape(spec.d_out, spec.d_in, upi, kh, kw)
    W = layer.weight.reshape(spec.d_out, spec.d_in, kh, kw)
    err = torch.zeros_like(W)
    for member in groups(spec, values["u"]):
        sel = (K & member[None, :, :, None, None]).double()
        err = torch.maximum(err, (W - (C * sel).sum(dim=2)).abs())
    bias_err = None
    if spec.has_bias:
        p, q = spec.const_tap
        beta = torch.relu(values["a_bias"][n_fan:].double())
        kept = Bm[:, n_fan:, p, q].double()
        bias_err = (layer.bias - (B[:, n_fan:, p, q] * beta * kept).sum(dim=1)).abs().numpy()
    we = err.numpy()
    if spec.kind == "linear":
        we = we[:, :, 0, 0]
    return np.asarray(we), bias_err
