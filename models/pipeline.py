"""The main job: construct the pruned random network for a target, verify it, save the run.

    construction = construct(target, input_shape, domain, options)   # trace, solve, assemble
    check = verify(construction, data)                                # torch, float64
    save_run(out_dir, construction, check, ...)                       # report + ticket

and back: ``rebuild(ticket, target)`` gives the identical pruned network with no solver.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn

from .bounds import certified_bound
from .construct import ConstructOptions, LayerSolution, input_shapes, make_spec, resolved_margin, solve_layer
from .data import DataError, Dataset
from .graph import TargetLayer, trace_target
from .pruned import assemble
from .random_net import LayerSpec, generate

TICKET_FORMAT = "lottery-ticket"
TICKET_VERSION = 1
CHECK_INPUTS = 32


class RunDirError(ValueError):
    """The output directory holds a different run (use --force) or cannot be written."""


@dataclass
class Construction:
    target: nn.Module  # the target as given (eval mode)
    folded: fx.GraphModule  # float64 traced target with BatchNorm folded
    layers: list[TargetLayer]
    specs: list[LayerSpec]
    solutions: list[LayerSolution]
    pruned: fx.GraphModule  # float32 pruned random network
    input_shape: tuple[int, ...]
    domain: tuple[float, float]
    options: ConstructOptions
    variant: str
    seconds: dict[str, float]
    memory: dict[str, float] = None  # peak resident memory (MB) after the solve phase


def _peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (ru_maxrss; Linux reports kB)."""
    import resource
    import sys as _sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if _sys.platform == "darwin" else 2**10)


def construct(target: nn.Module, input_shape: tuple[int, ...], domain: tuple[float, float],
              options: ConstructOptions, variant: str = "fanout", store=None) -> Construction:
    """Trace the target, solve every layer's subset-sum problems, assemble the pruned network.

    ``store``: a :class:`solver.store.ChunkStore` that keeps solved chunks (resumable runs)."""
    from tqdm.auto import tqdm

    if options.n < 1:
        raise ValueError(f"`n` (coefficients per subset-sum problem) must be an int >= 1; got {options.n}")
    if variant not in ("fanout", "dense"):
        raise ValueError(f"`variant` must be 'fanout' or 'dense'; got {variant!r}")
    if not domain[0] <= domain[1]:
        raise ValueError(f"input domain must be an interval LO <= HI; got {domain}")
    start = time.perf_counter()
    folded, layers = trace_target(target, input_nonneg=domain[0] >= 0)
    shapes = input_shapes(folded, torch.zeros(1, *input_shape))
    specs = [make_spec(layer, i, options, shapes[layer.name]) for i, layer in enumerate(layers)]
    solutions = []
    bar = tqdm(list(zip(layers, specs)), desc="layers", unit="layer",
               disable=(not options.progress) if options.progress is not None else None)
    for layer, spec in bar:
        bar.set_postfix_str(f"{spec.name}: {layer.weight.numel()} weights")
        solutions.append(solve_layer(layer, spec, options, index=len(solutions), store=store))
    solve_s = time.perf_counter() - start
    solve_peak_mb = _peak_rss_mb()  # peak so far: problems, solver and masks, before assembly
    t1 = time.perf_counter()
    pruned = assemble(folded, specs, [generate(s, dense=variant == "dense") for s in specs],
                      [s.masks for s in solutions], variant)
    return Construction(target=target, folded=folded, layers=layers, specs=specs, solutions=solutions,
                        pruned=pruned, input_shape=tuple(input_shape), domain=tuple(domain), options=options,
                        variant=variant, seconds={"solve": solve_s, "assemble": time.perf_counter() - t1},
                        memory={"peak_rss_mb_after_solve": solve_peak_mb})


def _batched(model: nn.Module, x: torch.Tensor, batch: int = 512) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)])


def domain_samples(input_shape: tuple[int, ...], domain: tuple[float, float], count: int, seed: int) -> torch.Tensor:
    """Uniform samples of the input box plus its two constant corners."""
    gen = torch.Generator().manual_seed(seed)
    lo, hi = domain
    x = torch.rand((count, *input_shape), generator=gen) * (hi - lo) + lo
    return torch.cat([torch.full((1, *input_shape), lo), torch.full((1, *input_shape), hi), x])


def verify(c: Construction, data: Dataset | None, samples: int = 512) -> dict[str, Any]:
    """Compare target and pruned network in float64 on the data (or domain samples).

    Returns max/mean |f(x) - g(x)|, accuracies and argmax agreement (with data), and the
    certified bound, which must be >= every observed error (``bound_holds``).
    """
    start = time.perf_counter()
    if data is not None:
        x = data.x
        lo, hi = float(x.min()), float(x.max())
        if lo < c.domain[0] or hi > c.domain[1]:
            raise DataError(f"data {data.name} has values in [{lo:g}, {hi:g}], outside the declared input "
                            f"domain [{c.domain[0]:g}, {c.domain[1]:g}]; the certified bound would not apply")
    else:
        x = domain_samples(c.input_shape, c.domain, samples, c.options.seed)
    target64 = copy.deepcopy(c.target).double().eval()
    f = _batched(target64, x.double())
    # the pruned layers cast weight * mask to the input's dtype (exact), so float64 inputs are
    # evaluated in float64 without a float64 copy of the (n times larger) random network
    g = _batched(c.pruned, x.double())
    diff = (f - g).abs()
    bound = certified_bound(c.folded, c.layers, [(s.weight_error, s.bias_error) for s in c.solutions],
                            c.input_shape, c.domain)
    out: dict[str, Any] = {
        "inputs": data.name if data is not None else f"{len(x)} samples of the domain",
        "count": len(x),
        "max_output_error": float(diff.max()),
        "mean_output_error": float(diff.mean()),
        "certified_bound": bound["bound"],
        "bound_holds": bool(diff.max() <= bound["bound"]),
        "bound_method": "interval bound propagation over the input box with per-layer weight/bias "
                        "errors (models/bounds.py)",
    }
    if data is not None and f.dim() == 2:
        y = data.y
        out["accuracy"] = {"target": float((f.argmax(1) == y).double().mean()),
                           "pruned": float((g.argmax(1) == y).double().mean())}
    if f.dim() == 2 and f.shape[1] > 1:
        out["agreement"] = float((f.argmax(1) == g.argmax(1)).double().mean())
    out["seconds"] = time.perf_counter() - start
    return out


# ----------------------------------------------------------------------------- reports

def _count_statuses(c: Construction) -> dict[str, int]:
    total = {"optimal": 0, "feasible": 0, "infeasible": 0}
    for s in c.solutions:
        for k, v in s.status_counts.items():
            total[k] += v
    return total


def layer_rows(c: Construction) -> list[dict[str, Any]]:
    rows = []
    for layer, spec, sol in zip(c.layers, c.specs, c.solutions):
        errs = sol.weight_error.reshape(-1)
        if sol.bias_error is not None:
            errs = np.concatenate([errs, sol.bias_error])
        rows.append({
            "layer": spec.name, "kind": spec.kind, "shape": list(layer.weight.shape),
            "bias": spec.has_bias, "folded_bn": layer.folded_bn, "input_nonneg": spec.input_nonneg,
            "weights": layer.num_params(), "n": spec.n, "problems": sol.problems,
            "random_params": spec.dense_params(), "random_params_fanout": spec.fanout_params(),
            "kept_params": sol.kept(), "scale": spec.scale,
            "max_weight_error": float(errs.max()), "mean_weight_error": float(errs.mean()),
            "status_counts": sol.status_counts, "presolved": sol.presolved, "seconds": sol.seconds, "backend": sol.backend,
        })
    return rows


def build_report(c: Construction, check: dict[str, Any], *, target_desc: dict[str, Any], data_spec: str | None,
                 total_seconds: float) -> dict[str, Any]:
    rows = layer_rows(c)
    all_errs = np.concatenate([np.concatenate([s.weight_error.reshape(-1)] + ([s.bias_error] if s.bias_error is not None else []))
                               for s in c.solutions])
    report = {
        "target": target_desc,
        "target_params": sum(l.num_params() for l in c.layers),
        "random_params": sum(r["random_params"] for r in rows),
        "random_params_materialized": sum((r["random_params"] if c.variant == "dense" else r["random_params_fanout"]) for r in rows),
        "kept_params": sum(r["kept_params"] for r in rows),
        "max_weight_error": float(all_errs.max()),
        "mean_weight_error": float(all_errs.mean()),
        "max_output_error": check["max_output_error"],
        "mean_output_error": check["mean_output_error"],
        "certified_bound": check["certified_bound"],
        "bound_holds": check["bound_holds"],
        "bound_method": check["bound_method"],
        "verified_on": check["inputs"],
        "memory": dict(c.memory or {}, peak_rss_mb=_peak_rss_mb()),
        "status_counts": _count_statuses(c),
        "presolved": sum(s.presolved for s in c.solutions),
        "seconds": {"solve": c.seconds["solve"], "assemble": c.seconds["assemble"], "verify": check["seconds"],
                    "total": total_seconds},
        "backend": sorted({r["backend"] for r in rows}) if len({r["backend"] for r in rows}) > 1 else rows[0]["backend"],
        "n": c.options.n,
        "objective": c.options.objective,
        "eps": c.options.eps,
        "seed": c.options.seed,
        "layout": c.options.layout,
        "variant": c.variant,
        "scale_policy": c.options.scale_policy,
        "scale_margin": resolved_margin(c.options),
        "input_shape": list(c.input_shape),
        "input_domain": list(c.domain),
        "data": data_spec,
        "random_network": random_network_description(c),
        "layers": rows,
    }
    if "accuracy" in check:
        report["accuracy"] = check["accuracy"]
    if "agreement" in check:
        report["agreement"] = check["agreement"]
    return report


def random_network_description(c: Construction) -> dict[str, Any]:
    """The distributions and scale policy of the random network, as recorded in the report."""
    if c.options.layout == "paper":
        dist = "every entry of A and B (weights and biases) i.i.d. U[-1, 1]; 2n fan-out units per input"
        scale = "none (s = 1)"
    else:
        dist = ("A's kept entries |u| ~ U(0, 1], n positive units per input when the input is >= 0, else n "
                "positive and n negative; constant units' bias beta ~ U(0, 1]; B ~ U[-s, s]; all other "
                "entries U[-1, 1] and pruned")
        what = "largest |weight or bias|" if c.options.scale_policy == "max" else "root mean square of its weights and biases"
        scale = f"s = {resolved_margin(c.options):g} x the layer's {what} (per-layer s in `layers`)"
    return {"layout": c.options.layout, "variant": c.variant, "distributions": dist, "scale_policy": scale,
            "seeds": "per layer: SeedSequence([seed, layer index]); float32 values drawn on the CPU"}


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def report_markdown(r: dict[str, Any]) -> str:
    lines = [
        f"# Lottery ticket for {r['target'].get('name', 'target')}\n",
        f"Random network: {len(r['layers'])} target layers -> {2 * len(r['layers'])} layers (fan-out A, ReLU, "
        f"combine B), n = {r['n']} coefficients per subset-sum problem, layout {r['layout']}, variant "
        f"{r['variant']}, seed {r['seed']}; objective {r['objective']}"
        + (f", eps = {r['eps']}" if r["eps"] is not None else "") + f"; backend {r['backend']}.\n",
        "| | value |", "|---|---|",
        f"| target params | {r['target_params']:,} |",
        f"| random params (dense g) | {r['random_params']:,} |",
        f"| kept params | {r['kept_params']:,} ({r['kept_params'] / max(r['target_params'], 1):.3g}x target) |",
        f"| max / mean weight error | {_fmt(r['max_weight_error'])} / {_fmt(r['mean_weight_error'])} |",
        f"| max / mean output error ({r['verified_on']}) | {_fmt(r['max_output_error'])} / {_fmt(r['mean_output_error'])} |",
        f"| certified bound on sup error over the input box {r['input_domain']} | {_fmt(r['certified_bound'])} |",
    ]
    if "accuracy" in r:
        lines.append(f"| accuracy target / pruned | {100 * r['accuracy']['target']:.2f}% / {100 * r['accuracy']['pruned']:.2f}% |")
    if "agreement" in r:
        lines.append(f"| argmax agreement | {100 * r['agreement']:.2f}% |")
    sc = r["status_counts"]
    lines.append(f"| statuses | {sc['optimal']} optimal, {sc['feasible']} feasible (time limit), {sc['infeasible']} infeasible; "
                 f"{r['presolved']} settled by the exact presolve, the rest by the backend |")
    s = r["seconds"]
    lines.append(f"| seconds: solve / assemble / verify / total | {s['solve']:.2f} / {s['assemble']:.2f} / {s['verify']:.2f} / {s['total']:.2f} |")
    lines.append("")
    lines.append("## Per layer\n")
    lines.append("| layer | kind | weights | n | random params | kept params | max weight error | mean weight error | statuses | time |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for row in r["layers"]:
        st = row["status_counts"]
        status = ", ".join(f"{v} {k}" for k, v in st.items() if v)
        lines.append(f"| {row['layer']} | {row['kind']}{' +BN' if row['folded_bn'] else ''} | {row['weights']:,} | {row['n']} | "
                     f"{row['random_params']:,} | {row['kept_params']:,} | {_fmt(row['max_weight_error'])} | "
                     f"{_fmt(row['mean_weight_error'])} | {status} | {row['seconds']:.2f} s |")
    lines.append("")
    lines.append(f"Certified bound: {r['bound_method']}; it holds on every verified input: {r['bound_holds']}.\n")
    lines.append("![weight errors](weight_errors.png)\n")
    return "\n".join(lines)


def plot_weight_errors(c: Construction, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for spec, sol in zip(c.specs, c.solutions):
        errs = sol.weight_error.reshape(-1)
        if sol.bias_error is not None:
            errs = np.concatenate([errs, sol.bias_error])
        floor = 1e-18
        ax.hist(np.log10(errs + floor), bins=60, histtype="step", linewidth=1.5, label=f"{spec.name} ({errs.size})")
    ax.set_xlabel("log10 |target weight - kept coefficient sum|")
    ax.set_ylabel("weights")
    ax.set_title("Per-layer weight errors")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- tickets

def _pack(mask: torch.Tensor) -> dict[str, Any]:
    flat = mask.reshape(-1).numpy().astype(bool)
    return {"shape": list(mask.shape), "bits": torch.from_numpy(np.packbits(flat))}


def _unpack(packed: dict[str, Any]) -> torch.Tensor:
    count = int(np.prod(packed["shape"])) if packed["shape"] else 1
    flat = np.unpackbits(packed["bits"].numpy(), count=count).astype(bool)
    return torch.from_numpy(flat.reshape(packed["shape"]))


def ticket_dict(c: Construction, target_desc: dict[str, Any], check_inputs: torch.Tensor) -> dict[str, Any]:
    """A plain dict (tensors, numbers, strings) from which the pruned network is rebuilt."""
    with torch.no_grad():
        outputs = c.pruned(check_inputs)
    return {
        "format": TICKET_FORMAT,
        "version": TICKET_VERSION,
        "target": target_desc,
        "input_shape": list(c.input_shape),
        "input_domain": list(c.domain),
        "variant": c.variant,
        "options": {k: v for k, v in asdict(c.options).items() if k not in ("progress",)},
        "layers": [s.to_dict() for s in c.specs],
        "masks": [{k: _pack(v) for k, v in sol.masks.items()} for sol in c.solutions],
        "check": {"inputs": check_inputs.clone(), "outputs": outputs.clone()},
    }


def _json_safe(x: Any) -> Any:
    return json.loads(json.dumps(x, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


@dataclass
class Rebuilt:
    """A ticket's pruned network and what it was assembled from."""

    pruned: fx.GraphModule
    specs: list[LayerSpec]
    folded: fx.GraphModule
    layers: list[TargetLayer]
    values: list[dict[str, torch.Tensor]]  # the random values (now also the network's parameters)
    masks: list[dict[str, torch.Tensor]]


def rebuild(ticket: dict[str, Any], target: nn.Module) -> Rebuilt:
    """The pruned network of a ticket: random values regenerated from the seeds, masks applied."""
    if ticket.get("format") != TICKET_FORMAT:
        raise ValueError(f"not a lottery ticket (format {ticket.get('format')!r})")
    domain = tuple(ticket["input_domain"])
    folded, layers = trace_target(target, input_nonneg=domain[0] >= 0)
    specs = [LayerSpec.from_dict(d) for d in ticket["layers"]]
    if [s.name for s in specs] != [l.name for l in layers]:
        raise ValueError(f"the ticket's layers {[s.name for s in specs]} do not match the target's {[l.name for l in layers]}")
    variant = ticket["variant"]
    values = [generate(s, dense=variant == "dense") for s in specs]
    masks = [{k: _unpack(v) for k, v in m.items()} for m in ticket["masks"]]
    return Rebuilt(assemble(folded, specs, values, masks, variant), specs, folded, layers, values, masks)


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


CHUNKS_DIR = "chunks"


def prepare_run_dir(out_dir: Path, config: dict[str, Any], force: bool, resume: bool = False) -> None:
    """Check the output directory before any work.

    A finished run with the same configuration, or an interrupted one (its chunk store) with the
    same configuration, is continued: solved chunks are reused. A different run is refused
    unless ``force``, which deletes it. ``resume`` insists that there is something to resume.
    """
    store_config = out_dir / CHUNKS_DIR / "config.json"
    if resume and not store_config.is_file():
        raise RunDirError(f"--resume: {str(out_dir)!r} holds no interrupted or finished run to resume")
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise RunDirError(f"output path {str(out_dir)!r} exists and is not a directory")
    if force:
        shutil.rmtree(out_dir)
        return
    if not any(out_dir.iterdir()):
        return
    wanted = config_hash(config)
    report = out_dir / "report.json"
    old = None
    if report.is_file():
        try:
            old = json.loads(report.read_text()).get("config_hash")
        except (OSError, json.JSONDecodeError):
            old = None
    elif store_config.is_file():
        try:
            old = json.loads(store_config.read_text()).get("config", {}).get("run_hash")
        except (OSError, json.JSONDecodeError):
            old = None
    else:
        raise RunDirError(f"output directory {str(out_dir)!r} is not empty and holds no lottery run; "
                          f"choose another --out or pass --force")
    if old != wanted:
        raise RunDirError(f"output directory {str(out_dir)!r} holds a different run (config {old}); "
                          f"choose another --out or pass --force to replace it")


def open_store(out_dir: Path, config: dict[str, Any]):
    """The run directory's chunk store (``DIR/chunks``), made for this configuration."""
    from solver.store import ChunkStore

    return ChunkStore(out_dir / CHUNKS_DIR, {"run_hash": config_hash(config)})


def save_run(out_dir: Path, c: Construction, report: dict[str, Any], target_file: Path, config: dict[str, Any],
             check_inputs: torch.Tensor, export: bool = False) -> None:
    """Write the run's files into a temporary sibling directory, then move them into ``out_dir``
    one by one (each move atomic), report.json last: a directory with a report.json is complete.
    The chunk store in ``out_dir/chunks`` is kept, so a rerun reuses every solved chunk."""
    out_dir = Path(out_dir)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        target_copy = "target" + "".join(target_file.suffixes[-1:])
        shutil.copyfile(target_file, tmp / target_copy)
        desc = dict(report["target"], file=target_copy)
        report = dict(report, target=desc, config=_json_safe(config), config_hash=config_hash(config))
        (tmp / "report.md").write_text(report_markdown(report))
        plot_weight_errors(c, tmp / "weight_errors.png")
        torch.save(ticket_dict(c, desc, check_inputs), tmp / "ticket.pt")
        torch.save(plain_state_dict(c.pruned), tmp / "pruned_state_dict.pt")
        if export:  # torch.export takes seconds (dynamo); opt-in
            export_program(c, check_inputs, tmp / "pruned.pt2")
        (tmp / "report.json").write_text(json.dumps(_json_safe(report), indent=2) + "\n")
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "report.json").unlink(missing_ok=True)  # the directory is incomplete until the end
        names = sorted(p.name for p in tmp.iterdir())
        for name in [n for n in names if n != "report.json"] + ["report.json"]:
            os.replace(tmp / name, out_dir / name)
        tmp.rmdir()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def plain_module(c: Construction) -> fx.GraphModule:
    """The pruned network with masks made permanent: plain Linear/Conv2d layers with zeros."""
    from .pruned import to_plain

    return to_plain(c.pruned)


def export_program(c: Construction, example: torch.Tensor, path: Path) -> None:
    """Save the pruned network with torch.export (batch size dynamic): load it with
    ``torch.export.load(path).module()``, with torch alone."""
    from torch.export import Dim, export

    program = export(plain_module(c), (example[:2],), dynamic_shapes=({0: Dim("batch", min=1)},))
    torch.export.save(program, str(path))


def plain_state_dict(pruned: nn.Module) -> dict[str, torch.Tensor]:
    """The pruned network's tensors with every ``X_orig`` * ``X_mask`` pair combined into ``X``
    (pruned entries are exact zeros): plain weights, no masks, no solver needed to use them."""
    sd = pruned.state_dict()
    out = {}
    for key, value in sd.items():
        if key.endswith("_mask") and key[: -len("_mask")] + "_orig" in sd:
            continue
        if key.endswith("_orig") and key[: -len("_orig")] + "_mask" in sd:
            out[key[: -len("_orig")]] = (value * sd[key[: -len("_orig")] + "_mask"]).detach().clone()
        else:
            out[key] = value.detach().clone()
    return out


def check_inputs_for(data: Dataset | None, input_shape: tuple[int, ...], domain: tuple[float, float], seed: int) -> torch.Tensor:
    if data is not None:
        return data.x[:CHECK_INPUTS].clone()
    return domain_samples(input_shape, domain, CHECK_INPUTS - 2, seed)
