"""Small layers the models share. Normalize is every model's first layer, so attacks see pixels."""

from __future__ import annotations

import torch
from torch import nn


class Normalize(nn.Module):
    """(x - mean) / std per channel; buffers, so they travel with the weights and the device."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


NORMALIZATION = {
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}


def normalization_for(dataset: str, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The data set's statistics, or a neutral 0.5/0.5 for a user's folder."""
    if dataset in NORMALIZATION:
        return NORMALIZATION[dataset]
    return (0.5,) * channels, (0.5,) * channels
