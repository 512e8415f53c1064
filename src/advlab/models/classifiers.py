"""Classifier architectures. Each takes images in [0, 1] and returns logits; Normalize comes first."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from advlab.models.layers import Normalize


def mnist_cnn(channels: int, size: int, num_classes: int, mean, std) -> nn.Sequential:
    """The MNIST network of Madry et al. 2018 (their released model): conv 32 5x5, pool, conv 64
    5x5, pool, fully connected 1024, logits."""
    flat = 64 * (size // 4) * (size // 4)
    return nn.Sequential(
        Normalize(mean, std),
        nn.Conv2d(channels, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(flat, 1024), nn.ReLU(), nn.Linear(1024, num_classes),
    )


def small_cnn(channels: int, size: int, num_classes: int, mean, std) -> nn.Sequential:
    """The small MNIST network of Wong, Rice & Kolter 2020 (their fast-training model): conv 16 4x4
    stride 2, conv 32 4x4 stride 2, fully connected 100, logits."""
    side = size // 4
    return nn.Sequential(
        Normalize(mean, std),
        nn.Conv2d(channels, 16, 4, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * side * side, 100), nn.ReLU(), nn.Linear(100, num_classes),
    )


def lenet(channels: int, size: int, num_classes: int, mean, std) -> nn.Sequential:
    """A LeNet-5-style small CNN (LeCun et al. 1998) with ReLU and max pooling: cheap for tests."""
    side = ((size - 4) // 2 - 4) // 2
    return nn.Sequential(
        Normalize(mean, std),
        nn.Conv2d(channels, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * side * side, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, num_classes),
    )


def mlp(channels: int, size: int, num_classes: int, mean, std, hidden: tuple[int, ...] = (200, 200)) -> nn.Sequential:
    """A fully connected net (default 200-200: Papernot et al. 2017's MNIST substitute)."""
    layers: list[nn.Module] = [Normalize(mean, std), nn.Flatten()]
    width = channels * size * size
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def linear(channels: int, size: int, num_classes: int, mean, std) -> nn.Sequential:
    """Softmax regression (Goodfellow et al. 2015's MNIST baseline); a closed-form test bed."""
    return nn.Sequential(Normalize(mean, std), nn.Flatten(), nn.Linear(channels * size * size, num_classes))


def _vgg_block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def cifar_cnn(channels: int, size: int, num_classes: int, mean, std, width: int = 32) -> nn.Sequential:
    """A small VGG-style CNN with batch norm: (2 convs, pool) x 3 at widths w, 2w, 4w, then a
    global max pool and a linear layer. About 0.29M parameters at the default width 32."""
    w = width
    return nn.Sequential(
        Normalize(mean, std),
        *_vgg_block(channels, w), *_vgg_block(w, w), nn.MaxPool2d(2),
        *_vgg_block(w, 2 * w), *_vgg_block(2 * w, 2 * w), nn.MaxPool2d(2),
        *_vgg_block(2 * w, 4 * w), *_vgg_block(4 * w, 4 * w), nn.MaxPool2d(2),
        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(4 * w, num_classes),
    )


class PreActBlock(nn.Module):
    """Pre-activation residual block (He et al. 2016, "Identity mappings in deep residual networks")."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = (nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None)

    def forward(self, x):
        out = F.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


class PreActResNet18(nn.Module):
    """PreAct ResNet-18, the CIFAR-10 model of Wong et al. 2020 (fast adversarial training)."""

    def __init__(self, channels: int, size: int, num_classes: int, mean, std) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.conv1 = nn.Conv2d(channels, 64, 3, 1, 1, bias=False)
        blocks, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks.append(nn.Sequential(PreActBlock(cin, cout, stride), PreActBlock(cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = blocks
        self.bn = nn.BatchNorm2d(512)
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x):
        out = self.conv1(self.normalize(x))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.adaptive_avg_pool2d(F.relu(self.bn(out)), 1).flatten(1)
        return self.linear(out)
