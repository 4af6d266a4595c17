"""Finding a strong ticket by training a mask: edge-popup, and the paper's Experiment 2 networks.

Edge-popup (Ramanujan et al., "What's hidden in a randomly weighted neural network?"): every weight
is frozen at its random value and gets a score; the forward pass keeps the weights whose |score|
is among the layer's top ``kept`` fraction (the others are zero) and the backward pass hands the
gradient of the masked weight straight through to the scores. Only the scores are trained.

Experiment 2 (Pensia et al.) prunes two kinds of random network with it:

* ``redundant``: every target layer d_in -> d_out replaced by the construction's structure with r
  fan-out units per input (:class:`RedundantLinear`: input i times r weights of its own, an
  optional ReLU, then a dense r d_in -> d_out layer), r = 5 in the paper;
* ``wide``: the plain architecture with its hidden layers widened until it has about as many
  weights as the redundant one.

Architectures: ``fc2`` (784-500-10), ``fc4`` (784-500-500-500-10) and ``lenet5`` (this project's
LeNet-5: its convolutions are plain edge-popup layers in every structure, its three Linear layers
redundant or widened). ``sparsity`` is the pruned fraction of every layer (kept = 1 - sparsity).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

ARCHS = ("fc2", "fc4", "lenet5")
STRUCTURES = ("redundant", "wide")
HIDDEN = 500
REDUNDANCY = 5


class TopK(torch.autograd.Function):
    """The mask of the ``kept`` fraction of entries with the largest scores (at least one entry);
    the gradient passes straight through to the scores."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, kept: float) -> torch.Tensor:
        flat = scores.flatten()
        k = max(1, int(round(kept * flat.numel())))
        if k == flat.numel():
            return torch.ones_like(scores)
        return (scores >= flat.kthvalue(flat.numel() - k + 1).values).to(scores.dtype)  # ties: all kept

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


class _Popup:
    """Mixin: frozen random ``weight`` (Kaiming normal over the kept fan-in, so the pruned layer keeps
    the activations' scale), trainable ``scores`` (Kaiming uniform), the layer's kept fraction."""

    def _init_popup(self, kept: float, generator: torch.Generator) -> None:
        if not 0.0 < kept <= 1.0:
            raise ValueError(f"the kept fraction must be in (0, 1]; got {kept}")
        self.kept = float(kept)
        fan_in = self.weight[0].numel()
        with torch.no_grad():  # Kaiming normal over the kept fan-in (Ramanujan et al.'s scaled init)
            self.weight.normal_(0.0, math.sqrt(2.0 / (kept * fan_in)), generator=generator)
        self.weight.requires_grad_(False)
        bound = math.sqrt(6.0 / fan_in)  # kaiming uniform (gain sqrt(2))
        self.scores = nn.Parameter(torch.empty_like(self.weight).uniform_(-bound, bound, generator=generator))

    def mask(self) -> torch.Tensor:
        return TopK.apply(self.scores.abs(), self.kept)

    def kept_count(self) -> int:
        with torch.no_grad():
            return int(self.mask().sum())


class PopupLinear(_Popup, nn.Linear):
    def __init__(self, d_in: int, d_out: int, kept: float, generator: torch.Generator):
        nn.Linear.__init__(self, d_in, d_out, bias=False)
        self._init_popup(kept, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask())


class PopupConv2d(_Popup, nn.Conv2d):
    def __init__(self, c_in: int, c_out: int, kernel: int, kept: float, generator: torch.Generator, padding: int = 0):
        nn.Conv2d.__init__(self, c_in, c_out, kernel, padding=padding, bias=False)
        self._init_popup(kept, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight * self.mask(), None)


class RedundantLinear(nn.Module):
    """A target layer d_in -> d_out in the construction's structure: fan-out (input i times its own r
    weights), an optional ReLU, and a dense combine layer r d_in -> d_out; both edge-popup pruned."""

    def __init__(self, d_in: int, d_out: int, redundancy: int, kept: float, generator: torch.Generator,
                 relu: bool = True):
        super().__init__()
        self.redundancy, self.relu = int(redundancy), bool(relu)
        # the fan-out as the diagonal blocks of a (d_in r) x d_in layer: one weight per (input, unit)
        self.fan_out = PopupLinear(1, d_in * redundancy, kept, generator)  # weight (d_in r, 1): unit (i, k)
        self.combine = PopupLinear(d_in * redundancy, d_out, kept, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = (self.fan_out.weight * self.fan_out.mask()).view(-1, self.redundancy)  # (d_in, r)
        h = (x.unsqueeze(-1) * w).flatten(-2)  # unit (i, k) = w[i, k] x_i
        return self.combine(F.relu(h) if self.relu else h)


def _widths(arch: str) -> list[int]:
    return {"fc2": [784, HIDDEN, 10], "fc4": [784, HIDDEN, HIDDEN, HIDDEN, 10], "lenet5": [400, 120, 84, 10]}[arch]


def redundant_params(arch: str, redundancy: int = REDUNDANCY) -> int:
    """Weights of the redundant network's Linear part: per layer r d_in (fan-out) + r d_in d_out."""
    w = _widths(arch)
    return sum(redundancy * a + redundancy * a * b for a, b in zip(w[:-1], w[1:]))


def wide_hidden(arch: str, redundancy: int = REDUNDANCY) -> int:
    """The hidden width h giving the widened Linear part about as many weights as the redundant one
    (h solves the part's weight count = redundant_params; every hidden layer h wide)."""
    w = _widths(arch)
    target = redundant_params(arch, redundancy)
    layers = len(w) - 1
    # weights(h) = w0 h + (layers - 2) h^2 + h w_last (layers >= 2): the positive root
    a, b = layers - 2, w[0] + w[-1]
    return int(round(target / b if a == 0 else (-b + math.sqrt(b * b + 4 * a * target)) / (2 * a)))


class PopupNet(nn.Module):
    """One Experiment 2 network: ``arch`` in ARCHS, ``structure`` in STRUCTURES, every layer keeping
    the fraction 1 - sparsity of its weights (at least one)."""

    def __init__(self, arch: str, structure: str, sparsity: float, seed: int, redundancy: int = REDUNDANCY,
                 relu: bool = True):
        super().__init__()
        if arch not in ARCHS or structure not in STRUCTURES:
            raise ValueError(f"arch must be one of {ARCHS} and structure one of {STRUCTURES}; got {arch!r}, "
                             f"{structure!r}")
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity (the pruned fraction) must be in [0, 1); got {sparsity}")
        gen = torch.Generator().manual_seed(seed)
        kept = 1.0 - sparsity
        self.arch, self.structure, self.sparsity = arch, structure, float(sparsity)
        self.features = None
        if arch == "lenet5":
            self.features = nn.Sequential(PopupConv2d(1, 6, 5, kept, gen, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                                          PopupConv2d(6, 16, 5, kept, gen), nn.ReLU(), nn.MaxPool2d(2))
        w = _widths(arch)
        if structure == "wide":
            h = wide_hidden(arch, redundancy)
            w = [w[0]] + [h] * (len(w) - 2) + [w[-1]]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(w[:-1], w[1:])):
            layers.append(RedundantLinear(a, b, redundancy, kept, gen, relu) if structure == "redundant"
                          else PopupLinear(a, b, kept, gen))
            if i < len(w) - 2:
                layers.append(nn.ReLU())
        self.classifier = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.features is not None:
            x = self.features(x)
        return self.classifier(torch.flatten(x, 1))

    def weights(self) -> int:
        """Random weights (all frozen)."""
        return sum(m.weight.numel() for m in self.modules() if isinstance(m, _Popup))

    def kept(self) -> int:
        """Weights the masks keep."""
        return sum(m.kept_count() for m in self.modules() if isinstance(m, _Popup))


@dataclass
class TrainSettings:
    """SGD on the scores (momentum, weight decay) with a cosine learning-rate schedule."""

    epochs: int = 20
    batch: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4


def train_scores(net: PopupNet, x: torch.Tensor, y: torch.Tensor, settings: TrainSettings, seed: int,
                 device: str = "cpu", progress=None) -> PopupNet:
    """Edge-popup: train the scores only (the weights stay frozen), seeded and deterministic on CPU
    (the order of the batches from ``seed``); ``progress(epoch, loss)`` after each epoch."""
    torch.manual_seed(seed)
    net = net.to(device).train()
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay)
    steps = settings.epochs * math.ceil(len(x) / settings.batch)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    gen = torch.Generator().manual_seed(seed)
    x, y = x.to(device), y.to(device)
    for epoch in range(settings.epochs):
        order = torch.randperm(len(x), generator=gen).to(device)
        total = 0.0
        for i in range(0, len(x), settings.batch):
            rows = order[i:i + settings.batch]
            loss = F.cross_entropy(net(x[rows]), y[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
            total += float(loss.detach()) * len(rows)
        if progress is not None:
            progress(epoch, total / len(x))
    return net.eval()


def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor, device: str = "cpu", batch: int = 1024) -> float:
    net = net.to(device).eval()
    with torch.no_grad():
        right = sum(int((net(x[i:i + batch].to(device)).argmax(1).cpu() == y[i:i + batch]).sum())
                    for i in range(0, len(x), batch))
    return right / len(x)
