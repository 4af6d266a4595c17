"""Architectures named on the command line (`--arch mlp | lenet5`) and the embedded default."""

from __future__ import annotations

import torch
import torch.nn as nn


def mlp(sizes: list[int], biases: list[bool] | bool = True) -> nn.Sequential:
    """Flatten, then Linear layers of the given widths with ReLU between (none after the last)."""
    if isinstance(biases, bool):
        biases = [biases] * (len(sizes) - 1)
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b, bias=biases[i]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class LeNet5(nn.Module):
    """LeNet-5 as `--arch lenet5` means it: conv1 1->6 5x5 pad 2, maxpool 2, conv2 6->16 5x5, maxpool 2,
    fc1 400->120, fc2 120->84, fc3 84->10, ReLU after each but the last. Input 1x28x28."""

    LAYERS = ("conv1", "conv2", "fc1", "fc2", "fc3")

    def __init__(self, biases: dict[str, bool] | bool = True):
        super().__init__()
        if isinstance(biases, bool):
            biases = {k: biases for k in self.LAYERS}
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2, bias=biases["conv1"])
        self.conv2 = nn.Conv2d(6, 16, 5, bias=biases["conv2"])
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(400, 120, bias=biases["fc1"])
        self.fc2 = nn.Linear(120, 84, bias=biases["fc2"])
        self.fc3 = nn.Linear(84, 10, bias=biases["fc3"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


class TransformerClassifier(nn.Module):
    """An ``nn.TransformerEncoder`` classifier: tokens (batch, T, in_features) -> Linear to d ->
    ``depth`` encoder layers (batch_first, GELU, post-norm) -> mean over tokens -> Linear to classes."""

    def __init__(self, in_features: int = 32, d: int = 64, heads: int = 4, depth: int = 2, classes: int = 10):
        super().__init__()
        self.embed = nn.Linear(in_features, d)
        layer = nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.1, activation="gelu", batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Linear(d, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(x)).mean(dim=1))
