"""The main job, end to end: load, construct, verify, report, save; and its check, rebuild and re-verify.

    outcome = solve_run(Job(target_file, arch, ...))   # lottery solve
    outcome = verify_run(run_dir)                      # lottery verify

Each step lives in its own module (target, data, construct, verify, report, ticket, rundir); the
construction, verification and report are the Python API's (:func:`models.api.build_ticket`), so
the command line is a thin layer over it: this module loads the files and claims the run directory.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import rundir
from .api import build_ticket, rebuild_run, run_config
from .options import ConstructOptions
from .data import load_data
from .domain import InputDomain
from .errors import UsageError
from .target import HF_ARCH, MAX_ABS_WEIGHT, input_shape_of, load_target, target_sha256
from .local import recorded_radius
from .verify import Verification, verify


@dataclass
class Job:
    """One ``lottery solve``: the target, the data, the box the bound covers, the options, the output."""

    target_file: Path
    arch: str | None  # None: a TorchScript file
    name: str
    data: str | None  # digits | digits28 | mnist:DIR | none
    normalize: tuple[float, float] | None
    input_shape: tuple[int, ...] | None  # None: from the data, the arch or the first layer
    domain: tuple[float, float] | str | None  # None: the data's range, else [0, 1]; "tokens": every token id
    options: ConstructOptions
    variant: str
    out_dir: Path
    force: bool = False
    resume: bool = False
    export: bool = False
    max_abs_weight: float = MAX_ABS_WEIGHT  # larger target weights are refused as a damaged file
    memory_budget: int | None = None  # bytes for the whole run; None: a share of the available memory
    state_dict_key: str | None = None  # which state_dict of the checkpoint (None: the one that fits)
    radius: float | None = None  # local certificates' l_inf radius (None: none)


def solve_run(job: Job) -> tuple[dict[str, Any], Verification]:
    """Run ``job`` and write its run directory; returns (the report as written, the verification)."""
    start = time.perf_counter()
    notes: list[str] = []
    arch = HF_ARCH if job.target_file.is_dir() and job.arch is None else job.arch
    model = load_target(job.target_file, arch, job.max_abs_weight, notes, job.state_dict_key)
    data = load_data(job.data, job.normalize)
    input_shape = job.input_shape or (tuple(data.x.shape[1:]) if data is not None else input_shape_of(model, arch))
    # a Hugging Face model reads token ids: by default every id of its vocabulary
    domain = job.domain or (data.domain if data is not None else "tokens" if arch == HF_ARCH else (0.0, 1.0))
    domain = InputDomain.given(domain, model)  # a box or a range of ids: told once the target is traced
    embeds = any(isinstance(m, torch.nn.Embedding) for m in model.modules())
    tokens = embeds and domain.lo.is_integer() and domain.hi.is_integer()  # for the shape check only
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, dtype=torch.long if tokens else torch.float32))
    except Exception as exc:  # any error of the user's forward means the shape does not fit
        raise UsageError(f"inputs of shape {input_shape} do not fit the target ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0]})") from exc
    target_desc = {"name": job.name, "arch": arch, "source": str(job.target_file),
                   "sha256": target_sha256(job.target_file), "state_dict_key": job.state_dict_key, "loaded": notes}
    config = run_config(target_desc, job.options, job.variant, domain, input_shape, job.data, job.normalize)
    protected = {"the target": job.target_file}
    if job.data and job.data.startswith("mnist:"):
        protected["the data"] = Path(job.data[len("mnist:"):])
    rundir.check_output_location(job.out_dir, protected)
    existed = job.out_dir.exists()
    try:
        rundir.prepare_run_dir(job.out_dir, config, job.force, job.resume)
        store = rundir.open_store(job.out_dir, config)
        ticket = build_ticket(model, input_shape, domain, data=data, variant=job.variant, radius=job.radius,
                              memory_limit=job.memory_budget, options=job.options, store=store, target=target_desc)
    except BaseException:
        if not existed and not rundir.has_solved_chunks(job.out_dir):
            shutil.rmtree(job.out_dir, ignore_errors=True)  # nothing solved yet: leave nothing behind
        raise
    ticket.report["data"] = job.data  # the spec, so `lottery verify` loads the same data
    report = ticket.write(job.out_dir, job.target_file, config, job.export)
    check = ticket.check
    report["seconds"]["total"] = time.perf_counter() - start
    return report, check


@dataclass
class VerifyOutcome:
    """What ``lottery verify`` found: the rebuild's bit-exactness and the new verification."""

    layers: int
    checked: int  # stored inputs whose outputs were compared bit for bit
    bit_exact: bool
    check: Verification
    reported_output_error: float
    same_as_report: bool
    largest_difference: float  # from the stored outputs (0 when bit-exact)
    within_rounding: bool  # bit-exact, or off by float rounding only (another machine's kernels)

    @property
    def ok(self) -> bool:
        return self.within_rounding and self.check.bound_holds is not False and self.same_as_report


#: a rebuilt ticket's outputs may differ from the stored ones by this, relative to 1 + their magnitude,
#: when it is rebuilt on another machine: the same masks and values, but CPU kernels (AVX2 / AVX-512)
#: that round reductions differently (a token ticket written on an earlier machine, rebuilt on an AVX2-only one: 1.1e-16);
#: one wrong mask bit moves an output by a coefficient, ~1e-3 and more
REBUILD_ROUNDING = 1e-12


def verify_run(run_dir: Path, data_spec: str | None = None, trust_pickle: bool = False) -> VerifyOutcome:
    """Rebuild a run's pruned network from its ticket, check its outputs bit for bit against the
    stored ones, and verify it again (on ``data_spec``, else the run's data).

    Everything in the directory is untrusted: the ticket is validated field by field, the target
    copy must have the SHA-256 the ticket records, and a pickled target (``--arch full``) is
    loaded only with ``trust_pickle``."""
    rebuilt, ticket, report = rebuild_run(run_dir, trust_pickle)
    inputs = ticket["check"]["inputs"]
    with torch.no_grad():
        outputs = rebuilt.pruned(inputs)
    stored = ticket["check"]["outputs"]
    same_shape = outputs.shape == stored.shape
    exact = same_shape and torch.equal(outputs, stored)
    magnitude = float(stored.double().abs().max()) if stored.numel() else 0.0
    diff = 0.0 if exact else float((outputs.double() - stored.double()).abs().max()) if same_shape else float("inf")
    rounding = diff <= REBUILD_ROUNDING * (1.0 + magnitude)
    normalize = report.get("config", {}).get("normalize")
    data = load_data(data_spec if data_spec is not None else report.get("data"), tuple(normalize) if normalize else None)
    check = verify(rebuilt, data, radius=recorded_radius(report))  # the run's radius (checked by read_report)
    reported = report["max_output_error"]
    same = abs(check.max_output_error - reported) <= 1e-12 * (1 + reported) or data_spec is not None
    return VerifyOutcome(len(rebuilt.specs), len(inputs), exact, check, reported, same, diff, rounding)
