"""Tiny targets for the construction tests (importable as module:tests.nets:Class)."""

from __future__ import annotations

import torch
import torch.nn as nn


class TinyCNN(nn.Module):
    """Conv+BN with padding, a strided conv, a residual add, both poolings, flatten, Linear."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(3)
        self.conv2 = nn.Conv2d(3, 3, 3, padding=1, bias=False)
        self.conv3 = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.avg = nn.AvgPool2d(1)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4 * 2 * 2, 3)

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        h = torch.relu(self.conv2(h)) + h  # residual
        h = self.avg(self.pool(torch.relu(self.conv3(h))))
        return self.fc(self.drop(h.view(h.size(0), -1)))


def tiny_cnn(seed: int = 0) -> TinyCNN:
    torch.manual_seed(seed)
    net = TinyCNN().eval()
    with torch.no_grad():
        net.bn1.running_mean.uniform_(-0.3, 0.3)
        net.bn1.running_var.uniform_(0.5, 1.5)
        net.bn1.weight.uniform_(0.5, 1.5)
        net.bn1.bias.uniform_(-0.2, 0.2)
    return net


class TinyMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(5, 6)
        self.fc2 = nn.Linear(6, 4, bias=False)
        self.fc3 = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def tiny_mlp(seed: int = 0) -> TinyMLP:
    torch.manual_seed(seed)
    return TinyMLP().eval()


class WithSigmoid(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.act = nn.Sigmoid()

    def forward(self, x):
        return self.act(self.fc(x))


class WithTanh(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return torch.tanh(self.fc(x))


class LoneBatchNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(3)
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(self.bn(x))


def dilated_cnn(seed: int = 0) -> nn.Sequential:
    """Dilation and stride with zero padding, biases everywhere, average pooling."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=2, dilation=2), nn.ReLU(),
        nn.Conv2d(3, 2, 3, stride=2, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8, 2),
    ).eval()
