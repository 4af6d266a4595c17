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


class OptionAShortcut(nn.Module):
    """The CIFAR ResNet's parameter-free shortcut (He et al. 2016, option A): every other pixel,
    the new channels zero-padded half before and half after."""

    def __init__(self, extra_channels: int):
        super().__init__()
        self.extra = extra_channels // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.extra, self.extra), "constant", 0.0)


class CifarBasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus the shortcut, then ReLU (parameter names as the widely shared
    CIFAR ResNet checkpoints have them: conv1, bn1, conv2, bn2, shortcut)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = OptionAShortcut(planes - in_planes) if stride != 1 or in_planes != planes else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """The classic 3-stage CIFAR-10 ResNet of depth 6 k + 2 (ResNet-20, -32, -44, -56, -110): a 3x3
    stem of 16 channels, three stages of k basic blocks at 16, 32, 64 channels (stride 2 and the
    option-A shortcut between stages), global average pooling, ``linear`` to the classes. Input 3x32x32.
    ``--arch 'module:models.zoo:CifarResNet(depth=20)'``."""

    def __init__(self, depth: int = 20, classes: int = 10):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"`depth` must be 6 k + 2 for k >= 1 (20, 32, 44, 56, 110); got {depth}")
        blocks = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages, planes = [], 16
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            layers = []
            for b in range(blocks):
                layers.append(CifarBasicBlock(planes, width, stride if b == 0 else 1))
                planes = width
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = nn.functional.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)
