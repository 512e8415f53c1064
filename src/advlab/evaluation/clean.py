"""Clean accuracy and the confusion matrix of a classifier on a data set."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from advlab.data import ImageDataset
from advlab.models.inference import predict_logits
from advlab.runtime import BatchSize


@dataclass
class CleanEvaluation:
    accuracy: float
    confusion: np.ndarray  # counts, true class by row
    per_class_accuracy: list[float]
    mean_confidence: float
    n: int

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy, "n": self.n, "mean_confidence": self.mean_confidence,
                "per_class_accuracy": self.per_class_accuracy, "confusion_matrix": self.confusion.tolist()}


def evaluate_clean(model: nn.Module, data: ImageDataset, device: torch.device | str = "cpu",
                   batch_size: int | BatchSize = 500) -> CleanEvaluation:
    """Accuracy, confusion matrix and confidence on data; a forward pass that runs out of memory is
    retried at half the batch (advlab.runtime.BatchSize)."""
    logits = predict_logits(model, data, device, batch_size)
    pred = logits.argmax(1)
    k = data.num_classes
    confusion = torch.bincount(data.labels * k + pred, minlength=k * k).view(k, k).numpy()
    per_class = (confusion.diagonal() / np.maximum(confusion.sum(1), 1)).tolist()
    confidence = logits.softmax(1).max(1).values.mean().item()
    return CleanEvaluation((pred == data.labels).float().mean().item(), confusion, per_class, confidence, len(data))
