"""The embedded default target: a small MLP trained (seconds, cached) on scikit-learn's digits."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn

from .data import digits
from .zoo import mlp

DEFAULT_SIZES = [64, 32, 10]
TRAIN_SEED = 0
EPOCHS = 400


def cache_dir() -> Path:
    root = os.environ.get("LOTTERY_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")), "lottery-tickets")
    return Path(root)


def train_digits_mlp(sizes: list[int] = DEFAULT_SIZES, seed: int = TRAIN_SEED, epochs: int = EPOCHS) -> nn.Module:
    """Full-batch Adam on the digits training split; deterministic for a given seed."""
    torch.manual_seed(seed)
    model = mlp(sizes, biases=True)
    train = digits("train")
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        opt.zero_grad()
        loss = loss_fn(model(train.x), train.y)
        loss.backward()
        opt.step()
    return model.eval()


def default_target() -> Path:
    """Path of the cached default target's state_dict (trained on first use)."""
    path = cache_dir() / f"digits_mlp_{'-'.join(map(str, DEFAULT_SIZES))}_seed{TRAIN_SEED}.pt"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        model = train_digits_mlp()
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, path)
    return path
