"""The main job, end to end: load, construct, verify, report, save; and its check, rebuild and re-verify.

    outcome = solve_run(Job(target_file, arch, ...))   # lottery solve
    outcome = verify_run(run_dir)                      # lottery verify

Each step lives in its own module (target, data, construct, verify, report, ticket, rundir);
this one only puts them in order and decides what a run's configuration is.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import rundir
from .construct import ConstructOptions, construct
from .data import load_data
from .report import build_report
from .target import HF_ARCH, MAX_ABS_WEIGHT, input_shape_of, load_target, target_sha256
from .ticket import TicketError, load_ticket, rebuild, rebuilt_construction
from .verify import check_inputs_for, verify


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


def solve_run(job: Job) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run ``job`` and write its run directory; returns (the report as written, the verification)."""
    start = time.perf_counter()
    notes: list[str] = []
    arch = HF_ARCH if job.target_file.is_dir() and job.arch is None else job.arch
    model = load_target(job.target_file, arch, job.max_abs_weight, notes, job.state_dict_key)
    data = load_data(job.data, job.normalize)
    input_shape = job.input_shape or (tuple(data.x.shape[1:]) if data is not None else input_shape_of(model, arch))
    # a Hugging Face model reads token ids: by default every id of its vocabulary
    domain = job.domain or (data.domain if data is not None else "tokens" if arch == HF_ARCH else (0.0, 1.0))
    embeds = [m for m in model.modules() if isinstance(m, torch.nn.Embedding)]
    if domain == "tokens":  # every id of the target's (first) Embedding
        if not embeds:
            raise ValueError("--input-domain tokens needs a target whose input is token ids (an nn.Embedding "
                             "first); this target has no Embedding")
        domain = (0.0, float(embeds[0].num_embeddings - 1))
    tokens = bool(embeds) and float(domain[0]).is_integer() and float(domain[1]).is_integer()  # ids: checked later
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, dtype=torch.long if tokens else torch.float32))
    except Exception as exc:  # any error of the user's forward means the shape does not fit
        raise ValueError(f"inputs of shape {input_shape} do not fit the target ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0]})") from exc
    target_desc = {"name": job.name, "arch": arch, "source": str(job.target_file),
                   "sha256": target_sha256(job.target_file), "state_dict_key": job.state_dict_key, "loaded": notes}
    # what determines the result (not workers, executor, progress: results are identical across them)
    config = {"target_sha256": target_desc["sha256"], "arch": arch, "options": job.options.hashed(),
              "variant": job.variant, "input_domain": list(domain), "input_shape": list(input_shape),
              "data": job.data, "normalize": list(job.normalize) if job.normalize else None}
    if job.state_dict_key is not None:  # (absent otherwise: runs made before the option keep their hash)
        config["state_dict_key"] = job.state_dict_key
    protected = {"the target": job.target_file}
    if job.data and job.data.startswith("mnist:"):
        protected["the data"] = Path(job.data[len("mnist:"):])
    rundir.check_output_location(job.out_dir, protected)
    existed = job.out_dir.exists()
    try:
        rundir.prepare_run_dir(job.out_dir, config, job.force, job.resume)
        store = rundir.open_store(job.out_dir, config)
        construction = construct(model, input_shape, domain, job.options, job.variant, store, job.memory_budget)
        check = verify(construction, data)
    except BaseException:
        if not existed and not rundir.has_solved_chunks(job.out_dir):
            shutil.rmtree(job.out_dir, ignore_errors=True)  # nothing solved yet: leave nothing behind
        raise
    report = build_report(construction, check, target_desc=target_desc, data_spec=job.data,
                          total_seconds=time.perf_counter() - start)
    check_inputs = check_inputs_for(data, input_shape, domain, job.options.seed, construction.tokens)
    report = rundir.save_run(job.out_dir, construction, report, job.target_file, config, check_inputs, job.export,
                             check.get("witness"))
    report["seconds"]["total"] = time.perf_counter() - start
    return report, check


@dataclass
class VerifyOutcome:
    """What ``lottery verify`` found: the rebuild's bit-exactness and the new verification."""

    layers: int
    checked: int  # stored inputs whose outputs were compared bit for bit
    bit_exact: bool
    check: dict[str, Any]
    reported_output_error: float
    same_as_report: bool

    @property
    def ok(self) -> bool:
        return self.bit_exact and self.check["bound_holds"] is not False and self.same_as_report


def verify_run(run_dir: Path, data_spec: str | None = None, trust_pickle: bool = False) -> VerifyOutcome:
    """Rebuild a run's pruned network from its ticket, check its outputs bit for bit against the
    stored ones, and verify it again (on ``data_spec``, else the run's data).

    Everything in the directory is untrusted: the ticket is validated field by field, the target
    copy must have the SHA-256 the ticket records, and a pickled target (``--arch full``) is
    loaded only with ``trust_pickle``."""
    ticket_path = run_dir / "ticket.pt"
    if not ticket_path.is_file():
        raise ValueError(f"{str(run_dir)!r} holds no ticket.pt; is it a `lottery solve` output directory?")
    report = rundir.read_report(run_dir / "report.json")
    rundir.check_ticket_file(run_dir, report)
    ticket = load_ticket(ticket_path)
    target_file = rundir.target_copy(run_dir, ticket["target"]["file"], ticket["target"]["sha256"])
    arch = ticket["target"]["arch"]
    if arch == "full" and not trust_pickle:
        raise TicketError(f"the ticket asks to unpickle {str(target_file)!r} (--arch full), which runs any code it "
                          f"holds; pass --trust-pickled-target only if you trust this directory")
    # the file the run was made with (SHA-256 checked), its state_dict chosen as the run chose it
    model = load_target(target_file, arch, math.inf, state_dict_key=ticket["target"].get("state_dict_key"))
    rebuilt = rebuild(ticket, model)
    inputs = ticket["check"]["inputs"]
    with torch.no_grad():
        outputs = rebuilt.pruned(inputs)
    exact = outputs.shape == ticket["check"]["outputs"].shape and torch.equal(outputs, ticket["check"]["outputs"])
    normalize = report.get("config", {}).get("normalize")
    data = load_data(data_spec if data_spec is not None else report.get("data"), tuple(normalize) if normalize else None)
    check = verify(rebuilt_construction(model, rebuilt, ticket), data)
    reported = report["max_output_error"]
    same = abs(check["max_output_error"] - reported) <= 1e-12 * (1 + reported) or data_spec is not None
    return VerifyOutcome(len(rebuilt.specs), len(inputs), exact, check, reported, same)
