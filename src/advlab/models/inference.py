"""Batched inference helpers shared by training, evaluation and attacks."""

from __future__ import annotations

import torch
from torch import nn

from advlab.data import ImageDataset
from advlab.runtime import BatchSize, as_batch_size, eval_mode


@torch.no_grad()
def predict_logits(model: nn.Module, data: ImageDataset, device: torch.device | str = "cpu",
                   batch_size: int | BatchSize = 500) -> torch.Tensor:
    """Logits for every image of data (model in eval mode), on the CPU. Data sets are read in batches of
    batch_size; a forward pass that runs out of memory is retried at half the size (advlab.runtime.BatchSize)."""
    batch = as_batch_size(batch_size)
    with eval_mode(model):
        return torch.cat([logits for x, _ in data.batches(batch.size, device=device)
                          for logits in batch.map(lambda s, x=x: model(x[s]).float().cpu(), len(x))])


def accuracy(model: nn.Module, data: ImageDataset, device: torch.device | str = "cpu") -> float:
    return (predict_logits(model, data, device).argmax(1) == data.labels).float().mean().item()
