"""The whole job from Python: build the ticket of an ``nn.Module``, verify it, save it, load it back.

    import models
    ticket = models.build_ticket(net, input_shape=(1, 28, 28), domain=(0.0, 1.0), n=21, eps=0.01)
    ticket.pruned(x)                        # the pruned random network, an nn.Module
    ticket.report["max_output_error"]       # the report `lottery solve` writes, as a dict
    ticket.save("runs/net")                 # a run directory; `lottery verify runs/net` checks it
    again = models.load_ticket("runs/net", trust_pickle=True)

``lottery solve`` does the same from files (:mod:`models.pipeline`); these calls share its steps.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from . import rundir
from .construct import construct
from .options import ConstructOptions
from .domain import InputDomain
from .network import PrunedNetwork
from .data import Dataset, load_data
from .errors import UsageError
from .report import build_report
from .target import load_target, target_sha256
from .ticket import TicketError, rebuild
from .ticket import load_ticket as read_ticket
from .local import check_radius, recorded_radius
from .verify import Verification, check_inputs_for, verify


@dataclass
class Ticket:
    """A constructed (or loaded) ticket: the pruned network, its latest verification and its report."""

    network: PrunedNetwork  # what the construction (or the rebuild from the saved ticket) returned
    check: Verification | None  # the latest verification (None: a ticket loaded without verifying)
    report: dict[str, Any]  # what report.json holds
    arch: str | None = None  # how save() writes the target: None a pickled module, else module:pkg.mod:NAME
    data: Dataset | None = field(default=None, repr=False)

    @property
    def pruned(self) -> nn.Module:
        """The pruned random network (float32, eval mode): the fan-out variant regenerates its random
        values from the seed where they are used; ``models.pruned.to_torch_prune`` converts it."""
        return self.network.pruned

    @property
    def target(self) -> nn.Module:
        return self.network.target

    def verify(self, data: Dataset | str | None = None, samples: int = 512, adversarial: int = 16,
               radius: float | None = None) -> Verification:
        """Verify again (on ``data``: a Dataset or a spec such as ``digits``, else the ticket's data or
        ``samples`` points of the input box); returns the verification and keeps it as ``check``."""
        data = _dataset(data) if data is not None else self.data
        if radius is None:  # the radius the ticket was verified at, when it records one
            radius = recorded_radius(self.report)
        self.check = verify(self.network, data, samples=samples, adversarial=adversarial, radius=radius)
        return self.check

    def save(self, directory: str | Path, force: bool = False, export: bool = False) -> Path:
        """Write a run directory (report.json, report.md, ticket.pt, the target, ...), as ``lottery
        solve --out DIRECTORY`` does. The target is written as a pickled module (``lottery verify``
        then needs ``--trust-pickled-target``), or as its state_dict when the ticket was built with
        ``arch='module:pkg.mod:NAME(...)'`` naming how to make it. Returns the directory."""
        out = Path(directory)
        c = self.network
        with tempfile.TemporaryDirectory() as tmp:
            target_file = Path(tmp) / "target.pt"
            torch.save(c.target if self.arch is None else c.target.state_dict(), target_file)
            arch = "full" if self.arch is None else self.arch
            self.report["target"] = dict(self.report["target"], arch=arch, sha256=target_sha256(target_file))
            config = run_config(self.report["target"], c.options, c.variant, c.domain, c.input_shape,
                                self.report.get("data"), None)
            rundir.check_output_location(out, {})
            rundir.prepare_run_dir(out, config, force)
            self.write(out, target_file, config, export)
        return out

    def write(self, out: Path, target_file: Path, config: dict[str, Any], export: bool = False) -> dict[str, Any]:
        """Write the run's files into the claimed directory ``out`` (:func:`models.rundir.prepare_run_dir`),
        the target copied from ``target_file``; returns the report as written."""
        c = self.network
        inputs = check_inputs_for(self.data, c.input_shape, c.domain, c.options.seed)
        self.report = rundir.save_run(out, c, self.report, target_file, config, inputs, export, self.check.witness if self.check is not None else None)
        return self.report


def run_config(target: dict[str, Any], options: ConstructOptions, variant: str, domain: InputDomain, input_shape,
               data: str | None, normalize: tuple[float, float] | None) -> dict[str, Any]:
    """What determines a run's result (not workers, executor, progress: results are identical across
    them): its hash names the run directory's configuration."""
    config = {"target_sha256": target["sha256"], "arch": target["arch"], "options": options.hashed(),
              "variant": variant, "input_domain": domain.to_json(), "input_shape": list(input_shape), "data": data,
              "normalize": list(normalize) if normalize else None}
    if target.get("state_dict_key") is not None:  # (absent otherwise: runs made before the option keep their hash)
        config["state_dict_key"] = target["state_dict_key"]
    return config


def _dataset(data: Dataset | str | None) -> Dataset | None:
    if data is None or isinstance(data, Dataset):
        return data
    if isinstance(data, str):
        return load_data(data)
    raise TypeError(f"`data` must be a models.data.Dataset, a spec such as 'digits' or 'mnist:DIR', or None; "
                    f"got {type(data).__name__}")


def build_ticket(module: nn.Module, input_shape: tuple[int, ...], domain: tuple[float, float] = (0.0, 1.0), *,
                 data: Dataset | str | None = None, variant: str = "fanout", memory_limit: int | None = None,
                 arch: str | None = None, name: str | None = None, samples: int = 512, adversarial: int = 16,
                 radius: float | None = None,
                 options: ConstructOptions | None = None, store=None, target: dict[str, Any] | None = None,
                 **settings: Any) -> Ticket:
    """Construct the pruned random network that computes ``module`` and verify it.

    Args:
        module: the target (any ``nn.Module`` the tracer accepts; put in eval mode here).
        input_shape: one input's shape without the batch dimension, e.g. ``(3, 32, 32)`` or ``(T,)``
            for token ids.
        domain: the inputs the certified bound covers: ``(lo, hi)`` or a :class:`models.domain.InputDomain`
            (a box, or a range of token ids when an Embedding reads the input).
        data: verify on this Dataset or data spec (``digits``, ``digits28``, ``mnist:DIR``); None:
            ``samples`` points of the box.
        variant: ``fanout`` (default) or ``dense``.
        memory_limit: bytes for the run (None: a share of the available memory).
        arch: ``module:pkg.mod:NAME(...)`` that makes ``module``, so ``save`` writes a state_dict
            instead of a pickled module.
        name: the target's name in the report (default: its class name).
        samples, adversarial: domain samples and adversarial starts of the verification.
        radius: the l_inf radius of local certificates around each verified input (None: none).
        options: the settings as one :class:`models.options.ConstructOptions` (or as keywords:)
        store: a :class:`solver.store.ChunkStore` keeping solved chunks (a resumable run).
        target: the report's description of the target (``lottery solve`` gives its file's).
        **settings: :class:`models.options.ConstructOptions` and :class:`solver.SolveOptions` fields:
            ``n`` (21, or ``'auto'`` with ``eps``), ``eps``, ``objective``, ``backend``, ``seed``,
            ``workers``, ``progress``, ...

    Returns:
        A :class:`Ticket`: ``ticket.pruned`` is the pruned network, ``ticket.report`` the report.

    Raises:
        models.errors.UnsupportedModelError: the target holds an op without a rule (named).
        models.memory.MemoryPlanError: the run cannot fit ``memory_limit``.
        ValueError, TypeError: an option is invalid (named, with what is expected).
    """
    check_radius(radius)  # before any solving
    if not isinstance(module, nn.Module):
        raise TypeError(f"`module` must be an nn.Module; got {type(module).__name__}")
    start = time.perf_counter()
    module.eval()
    dataset = _dataset(data)
    if options is not None and settings:
        raise TypeError(f"pass the settings as `options` or as keywords, not both; got options and {sorted(settings)}")
    options = options if options is not None else ConstructOptions.from_kwargs(**settings)
    c = construct(module, tuple(input_shape), domain, options, variant, store, memory_limit)
    check = verify(c, dataset, samples=samples, adversarial=adversarial, radius=radius)
    desc = target or {"name": name or type(module).__name__, "arch": arch, "source": "python", "sha256": None,
                      "loaded": []}
    report = build_report(c, check, target_desc=desc, data_spec=data if isinstance(data, str) else None,
                          total_seconds=time.perf_counter() - start)
    return Ticket(c, check, report, arch, dataset)


def rebuild_run(run_dir: Path, trust_pickle: bool = False):
    """(the target, the rebuilt pruned network, the ticket, the report) of a run directory, every
    file in it untrusted (see :func:`verify_run`)."""
    run_dir = Path(run_dir)
    ticket_path = run_dir / "ticket.pt"
    if not ticket_path.is_file():
        raise UsageError(f"{str(run_dir)!r} holds no ticket.pt; is it a `lottery solve` output directory?")
    report = rundir.read_report(run_dir / "report.json")
    rundir.check_ticket_file(run_dir, report)
    ticket = read_ticket(ticket_path)
    target_file = rundir.target_copy(run_dir, ticket["target"]["file"], ticket["target"]["sha256"])
    arch = ticket["target"]["arch"]
    if arch == "full" and not trust_pickle:
        raise TicketError(f"the ticket asks to unpickle {str(target_file)!r} (--arch full), which runs any code it "
                          f"holds; pass --trust-pickled-target only if you trust this directory (Python: trust_pickle=True)")
    # the file the run was made with (SHA-256 checked), its state_dict chosen as the run chose it
    model = load_target(target_file, arch, math.inf, state_dict_key=ticket["target"].get("state_dict_key"))
    return rebuild(ticket, model), ticket, report


def load_ticket(directory: str | Path, trust_pickle: bool = False, data: Dataset | str | None = None,
                verify_now: bool = True) -> Ticket:
    """A saved ticket (a run directory of ``lottery solve`` or :meth:`Ticket.save`) rebuilt from its
    seed and masks, its target loaded from the directory's copy (SHA-256 checked; a pickled target
    only with ``trust_pickle``), and verified again unless ``verify_now`` is False (then ``check`` is
    None)."""
    c, ticket, report = rebuild_run(Path(directory), trust_pickle)
    dataset = _dataset(data if data is not None else report.get("data"))
    arch = ticket["target"].get("arch")
    t = Ticket(c, None, report, None if arch == "full" else arch, dataset)
    if verify_now:
        t.verify()
    return t
