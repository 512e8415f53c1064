"""Batched inference helpers shared by training, evaluation and attacks."""

from __future__ import annotations

import torch
from torch import nn

from advlab.data import ImageDataset
from advlab.runtime import eval_mode


@torch.no_grad()
def predict_logits(model: nn.Module, data: ImageDataset, device: torch.device | str = "cpu",
                   batch_size: int = 500) -> torch.Tensor:
    """Logits for every image of data (model in eval mode), on the CPU."""
    with eval_mode(model):
        return torch.cat([model(x).float().cpu() for x, _ in data.batches(batch_size, device=device)])


def accuracy(model: nn.Module, data: ImageDataset, device: torch.device | str = "cpu") -> float:
    return (predict_logits(model, data, device).argmax(1) == data.labels).float().mean().item()
