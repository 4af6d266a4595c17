"""Targets trained (seconds, cached) on scikit-learn's digits: the embedded default MLP, the
Experiment 1 MLP on digits upsampled to 28x28, and a LeNet-5 on the same."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn

from solver.files import atomic_write

from .data import digits, digits28
from .zoo import mlp

DEFAULT_SIZES = [64, 32, 10]
TRAIN_SEED = 0
EPOCHS = 400


def cache_dir() -> Path:
    root = os.environ.get("LOTTERY_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")), "lottery-tickets")
    return Path(root)


def train_digits_mlp(sizes: list[int] = DEFAULT_SIZES, seed: int = TRAIN_SEED, epochs: int = EPOCHS,
                     biases: bool = True, upsample: bool = False, batch: int | None = None, lr: float = 1e-2) -> nn.Module:
    """An MLP trained on digits (see :func:`train_on_digits`)."""
    torch.manual_seed(seed)
    return train_on_digits(mlp(sizes, biases=biases), seed, epochs, upsample, batch, lr)


def train_on_digits(model: nn.Module, seed: int, epochs: int, upsample: bool, batch: int | None, lr: float) -> nn.Module:
    """Adam on the digits training split (upsampled to 28x28 if asked); deterministic per seed.
    ``batch`` None trains full-batch."""
    train = digits28("train") if upsample else digits("train")
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(train.x), generator=gen) if batch else torch.arange(len(train.x))
        for i in range(0, len(order), batch or len(order)):
            idx = order[i:i + (batch or len(order))]
            opt.zero_grad()
            loss = loss_fn(model(train.x[idx]), train.y[idx])
            loss.backward()
            opt.step()
    return model.eval()


def cached_digits_mlp(sizes: list[int], biases: bool, upsample: bool, epochs: int, batch: int | None, lr: float,
                      seed: int = TRAIN_SEED) -> Path:
    """Train once, then reuse: the state_dict file of a digits MLP with these settings."""
    tag = f"v3_{'-'.join(map(str, sizes))}_{'bias' if biases else 'nobias'}_{'28' if upsample else '8'}_e{epochs}_b{batch}_lr{lr:g}_s{seed}"
    path = cache_dir() / f"digits_mlp_{tag}.pt"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        model = train_digits_mlp(sizes, seed, epochs, biases, upsample, batch, lr)
        atomic_write(path, lambda fh: torch.save(model.state_dict(), fh))
    return path


def default_target() -> Path:
    """Path of the cached default target's state_dict (trained on first use)."""
    return cached_digits_mlp(DEFAULT_SIZES, biases=True, upsample=False, epochs=EPOCHS, batch=None, lr=1e-2)


def cached_digits_lenet5(epochs: int = 30, batch: int = 64, lr: float = 1e-3, seed: int = TRAIN_SEED) -> Path:
    """The state_dict file of a LeNet-5 (`--arch lenet5`) trained on digits upsampled to 28x28."""
    from .zoo import LeNet5

    path = cache_dir() / f"digits_lenet5_v3_e{epochs}_b{batch}_lr{lr:g}_s{seed}.pt"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(seed)
        model = train_on_digits(LeNet5(), seed, epochs, True, batch, lr)
        atomic_write(path, lambda fh: torch.save(model.state_dict(), fh))
    return path
