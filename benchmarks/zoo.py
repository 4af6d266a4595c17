"""The torchvision zoo, a transformer encoder and Hugging Face models: which real architectures the
construction takes, how exactly, how fast, in how much memory.

Every model is built with seeded random initialisation (weights=None, torch.manual_seed(seed)) and
constructed with min-error at --n (eps = 0.01 is the threshold weights are counted against) over
the input box [-1, 1] (a Hugging Face model: every token id), in its own process (a fresh peak-memory figure, a time limit, and a failure
that cannot take the others down). Per model: input size, n, target parameters, kept parameters,
weights outside eps, the largest weight error, the largest output error relative to the target's
output range on the verified samples, argmax agreement, the certified bound or why there is none,
seconds end to end and peak resident memory (against the goal of 24 bytes per target weight + 3 GiB:
``memory_goal_mb``, ``memory_goal_met`` in zoo.json); or refused, with the op named and why.
Writes zoo.md, zoo.json and zoo.png.

Environment: torchvision must import beside the installed torch. Its wheel for torch 2.13 is a
CUDA build that fails to import beside the CPU torch 2.13.0 (`operator torchvision::nms does not
exist`); torch 2.14.1 with torchvision 0.29.1 from the package index import and run on CPU:

    python -m venv zoo && zoo/bin/pip install torch==2.14.1 torchvision==0.29.1 && zoo/bin/pip install -e .
    zoo/bin/pip install transformers==4.44.2          # the BERT and GPT-2 rows (fx tracer; 4.57's GPT-2 is not traceable)
    zoo/bin/lottery bench zoo --quick                 # 64x64 inputs (ViT: 224), n = 12
    zoo/bin/lottery bench zoo                         # 224x224, n = 21
    zoo/bin/lottery bench zoo --models resnet18 --size 224 --n 16 --workers 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from models.errors import UsageError

from .common import cli_main, command_line, machine_info, markdown_table, new_figure, save_figure, write_outputs

TORCHVISION = ["resnet18", "resnet50", "vgg11_bn", "vgg16", "alexnet", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0",
               "densenet121", "squeezenet1_1", "shufflenet_v2_x0_5", "regnet_x_400mf", "convnext_tiny", "vit_b_16",
               "swin_t"]
OTHERS = ["vit_small", "transformer_encoder", "hf_bert_tiny", "hf_gpt2_tiny", "hf_gpt2_small"]
FIXED_SIZE = {"vit_b_16": 224, "swin_t": 224, "vit_small": 32}  # position tables fix the image size
EPS = 0.01


#: the input box of the image and feature models; a Hugging Face model reads every token id of its vocabulary
BOX = (-1.0, 1.0)
VOCAB = 1000
#: the memory goal of a run: peak resident memory at most this many bytes per target weight plus MEMORY_GOAL_FIXED
MEMORY_GOAL_PER_WEIGHT = 24
MEMORY_GOAL_FIXED = 3 * 2**30
#: GPT-2 small (transformers' default GPT2Config: 12 layers, width 768, its 50,257-token vocabulary) reads this many tokens
GPT2_TOKENS = 64


def _random_head(model):
    """torchvision initialises a ViT's classification head to zero (a constant network, no output range to
    measure errors against); the zoo draws it like a Linear's default."""
    import torch.nn as nn

    head = getattr(getattr(model, "heads", None), "head", None)
    if isinstance(head, nn.Linear) and not head.weight.any():
        head.reset_parameters()
    return model


def build(name: str, size: int, seed: int):
    """(model, input shape, input domain) of a zoo entry, seeded."""
    import torch

    torch.manual_seed(seed)
    if name in TORCHVISION:
        import torchvision.models as tvm

        side = FIXED_SIZE.get(name, size)
        return _random_head(getattr(tvm, name)(weights=None)).eval(), (3, side, side), BOX
    if name == "vit_small":  # vit_b_16's architecture (class token, position table, encoder) at a width that fits
        import torchvision.models as tvm

        vit = tvm.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
                                    num_classes=10)
        return _random_head(vit).eval(), (3, 32, 32), BOX
    if name == "transformer_encoder":
        from models.zoo import TransformerClassifier

        return TransformerClassifier().eval(), (16, 32), BOX
    if name in ("hf_bert_tiny", "hf_gpt2_tiny", "hf_gpt2_small"):
        import transformers

        if name == "hf_gpt2_small":  # 124M weights, random initialisation
            config = transformers.GPT2Config()
            return transformers.GPT2LMHeadModel(config).eval(), (GPT2_TOKENS,), (0.0, config.vocab_size - 1.0)

        if name == "hf_bert_tiny":
            config = transformers.BertConfig(num_hidden_layers=2, hidden_size=128, num_attention_heads=2,
                                             intermediate_size=512, vocab_size=VOCAB)
            return transformers.BertForSequenceClassification(config).eval(), (16,), (0.0, VOCAB - 1.0)
        config = transformers.GPT2Config(n_layer=2, n_embd=128, n_head=2, vocab_size=VOCAB)
        return transformers.GPT2LMHeadModel(config).eval(), (16,), (0.0, VOCAB - 1.0)
    raise UsageError(f"unknown zoo model {name!r}; known: {TORCHVISION + OTHERS}")


def measure_one(name: str, size: int, n: int | str, samples: int, seed: int, workers: int,
                memory_limit: int | None = None, n_max: int = 32, n_min: int = 1) -> dict[str, Any]:
    """Construct and verify one model in this process; a row of the table."""
    from models.construct import ConstructOptions, construct, peak_rss_mb
    from models.errors import UnsupportedModelError
    from models.memory import MemoryPlanError
    from models.report import eps_coverage, unconstructed
    from models.verify import verify

    row: dict[str, Any] = {"model": name, "n": n}
    try:
        model, shape, domain = build(name, size, seed)
    except ImportError as exc:
        return dict(row, status="not run", reason=f"{type(exc).__name__}: {exc}")
    row["input_shape"] = list(shape)
    start = time.perf_counter()
    try:
        options = ConstructOptions.from_kwargs(n=n, n_min=n_min, n_max=n_max, seed=seed, objective="min-error", eps=EPS,
                                               progress=False, workers=workers)
        c = construct(model, shape, domain, options, memory_budget=memory_limit)
    except (UnsupportedModelError, MemoryPlanError) as exc:
        return dict(row, status="refused", reason=str(exc), seconds=time.perf_counter() - start,
                    peak_rss_mb=peak_rss_mb())
    if n == "auto":  # the n each layer needed
        ns = [spec.n for spec in c.specs]
        row["n"] = f"auto ({min(ns)}-{max(ns)})"
        tried = [step["n"] for s in c.solutions for step in s.n_search["steps"]]
        row["n_tried"] = [min(tried), max(tried)]
    check = verify(c, None, samples=samples, adversarial=4)
    low, high = check.output_range_observed
    cov = eps_coverage(c)
    params = sum(layer.num_params() for layer in c.layers)
    goal_mb = (MEMORY_GOAL_PER_WEIGHT * params + MEMORY_GOAL_FIXED) / 2**20
    return dict(row, status="ok", target_params=params, memory_goal_mb=goal_mb,
                memory_goal_met=peak_rss_mb() <= goal_mb,
                unconstructed_params=len(unconstructed(c)), kept_params=sum(s.kept() for s in c.solutions),
                weights_missing_eps=cov["weights_missing_eps"],
                max_weight_error=max(s.error_summary()[0] for s in c.solutions),
                max_output_error=check.max_output_error,
                relative_output_error=check.max_output_error / (high - low) if high > low else None,
                agreement=check.agreement, near_ties=check.near_ties, inputs=check.count,
                float64_inputs=check.float64_inputs,
                certified_bound=check.certified_bound, bound_reason=check.certified_bound_reason,
                bound_holds=check.bound_holds, seconds=time.perf_counter() - start,
                seconds_parts={"solve": c.seconds["solve"], "verify": check.seconds},
                verify_phases=check.phase_seconds, peak_rss_mb=peak_rss_mb(),
                peak_rss_mb_after_solve=c.memory["peak_rss_mb_after_solve"], memory_budget=c.plan.budget,
                verify_batch=c.plan.verify_batch)


def _in_subprocess(name: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.zoo", "--one", name, "--size", str(args.size), "--n", str(args.n),
           "--samples", str(args.samples), "--seed", str(args.seed), "--workers", str(args.workers),
           "--n-min", str(args.n_min), "--n-max", str(args.n_max)]
    if args.memory_limit:
        cmd += ["--memory-limit", args.memory_limit]
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"model": name, "n": args.n, "status": "timeout", "reason": f"over the {args.timeout} s limit",
                "seconds": time.perf_counter() - start}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"model": name, "n": args.n, "status": "failed", "reason": tail, "seconds": time.perf_counter() - start}
    return json.loads(lines[-1])


def _fmt(x: Any, spec: str = ".3g") -> str:
    return "-" if x is None else format(x, spec)


def _n_arg(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return _positive(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be an int >= 1 or auto; got {text!r}") from None


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be an int >= 1; got {text!r}")
    return n


def _table(rows: list[dict[str, Any]]) -> str:
    headers = ["model", "input", "n", "weights", "kept / target", "miss eps", "max weight error",
               "max output error / range", "agreement", "certified bound", "seconds", "peak MB", "status"]
    table = []
    for r in rows:
        if r["status"] != "ok":
            table.append([r["model"], "x".join(map(str, r.get("input_shape", []))) or "-", r["n"], "-", "-", "-", "-",
                          "-", "-", "-", _fmt(r.get("seconds"), ".0f"), _fmt(r.get("peak_rss_mb"), ".0f"),
                          f"{r['status']}: {r['reason']}"])
            continue
        bound = _fmt(r["certified_bound"]) if r["certified_bound"] is not None else f"none ({r['bound_reason']})"
        table.append([r["model"], "x".join(map(str, r["input_shape"])), r["n"], f"{r['target_params']:,}",
                      f"{r['kept_params'] / r['target_params']:.3g}", r["weights_missing_eps"],
                      _fmt(r["max_weight_error"]), _fmt(r["relative_output_error"]),
                      "-" if r["agreement"] is None else f"{100 * r['agreement']:.2f}%"
                      + (f" ({r['near_ties']} near ties)" if r.get("near_ties") else ""), bound,
                      f"{r['seconds']:.0f}", f"{r['peak_rss_mb']:.0f}", "ok"])
    return markdown_table(headers, table)


def _plot(rows: list[dict[str, Any]], path: Path) -> dict:
    ok = [r for r in rows if r["status"] == "ok" and r["relative_output_error"]]
    plt, fig, (ax1, ax2) = new_figure(1, 2, figsize=(12, 4.5))
    names = [r["model"] for r in ok]
    x = list(range(len(ok)))
    ax1.plot(x, [r["relative_output_error"] for r in ok], "o", label="max output error / output range")
    ax1.plot(x, [r["max_weight_error"] for r in ok], "s", label="max weight error")
    if ok:  # a log axis needs points; with none built the panels stay empty
        ax1.set_yscale("log")
        ax2.set_xscale("log")
        ax2.set_yscale("log")
    ax1.set_xticks(x, names, rotation=60, ha="right")
    # above the axes: inside, it hides the points of whichever model lies under it
    ax1.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    ax1.set_title("errors (min-error)", pad=24)
    ax2.plot([r["target_params"] for r in ok], [r["seconds"] for r in ok], "o", label="seconds end to end")
    ax2.set_xlabel("target parameters")
    ax2.legend()
    ax2.set_title("time")
    return save_figure(plt, fig, path)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="64x64 inputs (ViT and Swin: 224) and n = 12")
    p.add_argument("--models", default=None, help=f"comma-separated subset of {','.join(TORCHVISION + OTHERS)}")
    p.add_argument("--size", type=int, default=224, help="image side (default 224)")
    p.add_argument("--n", type=_n_arg, default=21,
                   help="coefficients per problem (default 21), or auto: per layer the smallest n (at most --n-max) with "
                        "every weight within eps = 0.01")
    p.add_argument("--n-min", type=_positive, default=1,
                   help="with --n auto: the smallest n tried (default 1; 21: the paper's n wherever it suffices)")
    p.add_argument("--n-max", type=_positive, default=32,
                   help="with --n auto: the largest n tried (default 32); the memory plan assumes it everywhere")
    p.add_argument("--samples", type=int, default=256, help="inputs of the box verified per model (default 256)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random initialisation and random network")
    p.add_argument("--workers", type=int, default=2, help="solver workers (default 2)")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per model (default 1800)")
    p.add_argument("--memory-limit", default=None, help="memory budget per model (e.g. 10G; default: 70%% of "
                   "the available memory), which plans the verification batches")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # worker mode: one model, a JSON line
    p.add_argument("--out", type=Path, default=Path("bench_out/zoo"), help="output directory")


def run(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.one:
        from models.commands import parse_bytes

        budget = parse_bytes(args.memory_limit) if args.memory_limit else None
        print(json.dumps(measure_one(args.one, args.size, args.n, args.samples, args.seed, args.workers, budget,
                                     n_min=args.n_min, n_max=args.n_max)),
              flush=True)
        return None
    if args.quick:
        args.size, args.n = 64, 12
    names = args.models.split(",") if args.models else TORCHVISION + OTHERS
    unknown = [m for m in names if m not in TORCHVISION + OTHERS]
    if unknown:
        raise UsageError(f"unknown zoo model(s) {unknown}; known: {TORCHVISION + OTHERS}")
    rows = []
    for name in names:
        rows.append(_in_subprocess(name, args))
        r = rows[-1]
        print(f"{name}: {r['status']}" + (f" ({r['reason'][:120]})" if r.get("reason") else
                                          f", {r['seconds']:.0f} s, relative output error "
                                          f"{_fmt(r.get('relative_output_error'))}"), file=sys.stderr, flush=True)
    info = machine_info()
    md = [f"# The zoo (n = {args.n}, min-error, input box [-1, 1] or every token id, seed {args.seed})\n\n",
          f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}. Command: `{command_line()}`.\n\n",
          _table(rows), "\nSeeded random initialisation (no pretrained weights: none can be downloaded here). "
          "'max output error / range': the largest |f(x) - g(x)| on the verified samples of the box over the "
          "target's observed output range; agreement: argmax agreement on the same samples (near ties: samples whose "
          "target top-2 margin is at most twice the largest error, the only ones where the argmax may differ; "
          "randomly initialised classifiers have many). A certified bound of "
          "'none' names the op without a rule. Refused rows name the op and why.\n\n![zoo](zoo.png)\n"]
    args.out.mkdir(parents=True, exist_ok=True)
    series = _plot(rows, args.out / "zoo.png")
    payload = {"machine": info, "command": command_line(), "n": args.n, "size": args.size, "seed": args.seed,
               "rows": rows, "plot": series}
    paths = write_outputs(args.out, "zoo", payload, "".join(md))
    print("".join(md))
    print(f"wrote {paths['md']}, {paths['json']}, {args.out / 'zoo.png'}")
    return payload


def main(argv: list[str] | None = None) -> None:
    cli_main("lottery bench zoo", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    main()
