"""`lottery solve` and `lottery verify`: command-line arguments to a :class:`models.pipeline.Job`.

The flags of the construction and solver options are not written here: they are derived from
the fields of :class:`models.options.ConstructOptions` and :class:`solver.SolveOptions`
(flag, help text, type, range, choices), and parsed values are checked by the same code that
checks the options in Python.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import MISSING, fields
from pathlib import Path

from solver import SolveOptions, SolverError
from solver.options import check_field

from .options import ConstructOptions
from .errors import UsageError
from .pipeline import Job, solve_run, verify_run
from .report import fmt
from .random_net import VARIANTS
from .target import MAX_ABS_WEIGHT
from .report import console_summary

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

OPTION_CLASSES = (ConstructOptions, SolveOptions)
OPTION_GROUPS = {ConstructOptions: "random network and construction", SolveOptions: "solver"}


def _cli_fields(cls):
    return [f for f in fields(cls) if f.metadata.get("cli")]


def _parser_for(f, flag: str):
    """An argparse ``type`` that converts the text and checks it as the option itself does."""
    kind = f.metadata["kind"]

    def parse(text: str):
        if kind is str or text in f.metadata.get("words", ()):
            return text
        try:
            value = parse_bytes(text) if f.name == "memory_limit" else int(text) if kind is int else float(text)
        except ValueError:
            words = "".join(f" or {w!r}" for w in f.metadata.get("words", ()))
            raise argparse.ArgumentTypeError(f"must be {'an int' if kind is int else 'a number'}{words}; "
                                             f"got {text!r}") from None
        try:
            return check_field(f, value, name=flag)
        except SolverError as exc:  # argparse names the flag already
            raise argparse.ArgumentTypeError(str(exc).replace(f"`{flag}` ", "", 1)) from None

    parse.__name__ = kind.__name__
    return parse


BYTE_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_bytes(text: str) -> int:
    """``4G``, ``512M``, ``1.5GiB`` or a plain number of bytes."""
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    unit = t[-1] if t and t[-1] in BYTE_UNITS else ""
    return int(float(t[: len(t) - len(unit)]) * BYTE_UNITS[unit])


def add_option_arguments(p, cls) -> None:
    """One flag per option field that declares one (``option(cli=...)``)."""
    for f in _cli_fields(cls):
        meta, flag = f.metadata, f.metadata["cli"]
        default = meta["cli_default"] if meta["cli_default"] is not MISSING else f.default
        shown = "all cores" if f.name == "workers" and default is None else default
        if meta["kind"] is bool:  # the flag turns a default-on option off (e.g. --no-presolve)
            p.add_argument(flag, dest=f.name, action="store_false", help=f"switch off the {meta['doc']}")
        elif meta["choices"] is not None:
            p.add_argument(flag, dest=f.name, choices=meta["choices"], default=default,
                           help=f"{meta['doc']} (default {shown})")
        elif meta.get("cli_help"):
            p.add_argument(flag, dest=f.name, type=_parser_for(f, flag), default=default, help=meta["cli_help"])
        else:
            p.add_argument(flag, dest=f.name, type=_parser_for(f, flag), default=default,
                           help=meta["doc"] + ("" if default is None and f.name != "workers" else f" (default {shown})"))


def options_from_args(args: argparse.Namespace) -> ConstructOptions:
    """The validated options of the flags (``--no-progress`` sets the solver's ``progress``)."""
    solve = {f.name: getattr(args, f.name) for f in _cli_fields(SolveOptions)
             if getattr(args, f.name) is not None or f.default is None}  # unset: the API's default
    own = {f.name: getattr(args, f.name) for f in _cli_fields(ConstructOptions)}
    return ConstructOptions(**own, solve=SolveOptions(**solve, progress=False if args.no_progress else None))


def flags_in(message: str) -> str:
    """An option error as the command line knows it: `eps` -> --eps."""
    for cls in OPTION_CLASSES:
        for f in _cli_fields(cls):
            message = message.replace(f"`{f.name}`", f.metadata["cli"])
    return message


def _bytes(text: str) -> int:
    """An argparse ``type`` for a byte count (``8G``, ``512M``, ``1000000``)."""
    try:
        value = parse_bytes(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a byte count >= 1 such as 8G or 512M; got {text!r}")
    return value


def _numbers(kind: type, count: int | None = None):
    """An argparse ``type`` for comma-separated numbers (``count`` of them if given)."""

    def parse(text: str) -> tuple:
        try:
            values = tuple(kind(v) for v in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be comma-separated {'ints' if kind is int else 'numbers'}; "
                                             f"got {text!r}") from None
        if count is not None and len(values) != count:
            raise argparse.ArgumentTypeError(f"needs {count} numbers; got {text!r}")
        return values

    parse.__name__ = f"{kind.__name__} list"
    return parse


def _domain(text: str) -> tuple[float, float] | str:
    named = {"nonneg": (0.0, 1.0), "signed": (-1.0, 1.0)}
    if text in named:
        return named[text]
    if text == "tokens":
        return text  # every id of the target's Embedding: resolved once the target is loaded
    lo, hi = _numbers(float, 2)(text)
    if lo > hi:
        raise argparse.ArgumentTypeError(f"LO,HI needs LO <= HI; got {text!r}")
    return (lo, hi)


def add_solve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", nargs="?", type=Path,
                   help="target file: a checkpoint (torch.save or safetensors, told by content whatever the extension: "
                        ".pt .pth .th .tar .ckpt .bin .safetensors), with --arch, or TorchScript (scripted or traced); "
                        "a directory: a Hugging Face save_pretrained folder (needs --input-shape T); "
                        "omitted: the embedded digits default")
    p.add_argument("--arch", help="mlp | lenet5 | module:pkg.mod:NAME | 'module:pkg.mod:NAME(key=value, ...)' "
                                  "(NAME a module class or factory function, literal keyword arguments) | full "
                                  "(pickled module you trust) | hf (a Hugging Face folder; implied by a directory); "
                                  "omit for TorchScript")
    p.add_argument("--state-dict-key", metavar="PATH",
                   help="which state_dict of the checkpoint: its entry (e.g. model_ema, or state_dict/model_ema for "
                        "a nested one), optionally ending in a key prefix (state_dict/model_ema.); default: the one "
                        "that fits --arch, the first in the file if several do (EMA copies last)")
    for cls in OPTION_CLASSES:
        add_option_arguments(p.add_argument_group(OPTION_GROUPS[cls]), cls)
    p.add_argument("--data", help="digits | digits28 (digits upsampled to 28x28) | mnist:DIR | none "
                                  "(default: digits for the embedded target, else none)")
    p.add_argument("--radius", type=float, default=None,
                   help="l_inf radius R >= 0 of local certificates: the certified sup of |f - g| over the ball of "
                        "radius R around verified inputs (the largest errors first, as many as fit 30 s, at least "
                        "one), clipped to the input domain, and the certified agreement of the argmax (e.g. "
                        "1/255 of [0, 1] pixels: 0.00392; 0: at the inputs themselves; default: none)")
    p.add_argument("--normalize", type=_numbers(float, 2), help="MEAN,STD applied to MNIST pixels after scaling to [0,1]")
    p.add_argument("--input-domain", type=_domain,
                   help="nonneg (= [0,1]) | signed (= [-1,1]) | LO,HI: the box the certified "
                        "bound covers (default: the data's range, else nonneg) | tokens: the input is token ids, "
                        "every id of the target's Embedding (LO,HI: a range of ids)")
    p.add_argument("--input-shape", type=_numbers(int),
                   help="C,H,W or D: input shape without the batch dimension (default: from the "
                        "data, 1,28,28 for lenet5, the first weight's width for mlp)")
    p.add_argument("--out", type=Path, help="output directory (default runs/<target name>)")
    p.add_argument("--variant", choices=VARIANTS, default="fanout",
                   help="fanout: materialise only A's kept block; dense: the theorem's full random A")
    p.add_argument("--export", action="store_true",
                   help="also write pruned.pt2, a torch.export program of the pruned network (adds seconds)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in --out (rerunning into the same directory does too); "
                        "refused if the configuration differs")
    p.add_argument("--force", action="store_true",
                   help="replace a run directory holding a different run (only the files this tool wrote there)")
    p.add_argument("--allow-large-weights", action="store_true",
                   help=f"accept target weights above {MAX_ABS_WEIGHT:g} in magnitude (refused by default as a damaged file)")
    p.add_argument("--memory-limit", type=_bytes, metavar="BYTES",
                   help="memory budget of the run, e.g. 8G: construction and verification are planned to fit it "
                        "and a run that cannot is refused before solving (default: 70%% of the available memory)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _job(args: argparse.Namespace) -> Job:
    options = options_from_args(args)
    if args.target is None:
        from .default import DEFAULT_SIZES, default_target

        if args.arch not in (None, "mlp") or args.state_dict_key is not None:
            raise UsageError("the embedded default target is an mlp; pass a TARGET file to use --arch or --state-dict-key")
        print("training/loading the embedded default: MLP "
              f"{'-'.join(map(str, DEFAULT_SIZES))} on scikit-learn digits ...", file=sys.stderr)
        target_file, arch, data, name = default_target(), "mlp", args.data or "digits", "digits-default"
    else:
        target_file, arch, data, name = args.target, args.arch, args.data, args.target.stem
    return Job(target_file=Path(target_file), arch=arch, name=name, data=data, normalize=args.normalize,
               input_shape=args.input_shape, domain=args.input_domain, options=options, variant=args.variant,
               out_dir=args.out or Path("runs") / name, force=args.force, resume=args.resume, export=args.export,
               max_abs_weight=math.inf if args.allow_large_weights else MAX_ABS_WEIGHT, memory_budget=args.memory_limit,
               state_dict_key=args.state_dict_key, radius=args.radius)


def run_solve(args: argparse.Namespace) -> int:
    job = _job(args)
    report, check = solve_run(job)
    print(console_summary(report))
    print(f"report: {job.out_dir / 'report.md'}  (ticket: {job.out_dir / 'ticket.pt'}; "
          f"re-check with `lottery verify {job.out_dir}`)")
    if check.bound_holds is False:
        print("error: an observed error exceeds the certified bound; this is a bug, please report it", file=sys.stderr)
        return 1
    return 0


def add_verify_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, help="a directory written by `lottery solve`")
    p.add_argument("--data", help="override the data used for re-verification (digits | mnist:DIR | none)")
    p.add_argument("--trust-pickled-target", action="store_true",
                   help="allow a run made with --arch full: its target is a pickle, which can run any code")


def run_verify(args: argparse.Namespace) -> int:
    """Rebuild the pruned network from the ticket, check bit-exact outputs, re-verify."""
    out = verify_run(args.run_dir, args.data, trust_pickle=args.trust_pickled_target)
    check = out.check
    how = "float rounding, within what another machine's CPU kernels give" if out.within_rounding else \
        "more than float rounding"
    print(f"rebuilt {out.layers} pairs from {args.run_dir / 'ticket.pt'}; outputs on {out.checked} stored inputs "
          f"bit-exact: {out.bit_exact}" + ("" if out.bit_exact else f" (largest difference {out.largest_difference:.3g}: {how})"))
    print(f"max output error {check.max_output_error:.3g} (report: {out.reported_output_error:.3g}), "
          f"certified bound {fmt(check.certified_bound)}" + (" (vacuous: more than the target's output spread)" if check.vacuous else "")
          + f", bound holds: {check.bound_holds}")
    if check.accuracy is not None:
        print(f"accuracy target/pruned {100 * check.accuracy['target']:.2f}% / {100 * check.accuracy['pruned']:.2f}%")
    print("verify: OK" if out.ok else "verify: FAILED")
    return 0 if out.ok else 1
