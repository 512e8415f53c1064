"""Defensive distillation (Papernot, McDaniel, Wu, Jha & Swami 2016, sec. IV-B).

1. Train a teacher with the softmax at temperature T: cross-entropy of softmax(z / T) (eq. 3).
2. Train a student of the same architecture on the teacher's soft labels softmax(z_teacher / T),
   also at temperature T.
3. Deploy the student at T = 1: its logits are simply used as they are.

Trained at T, the student's logits come out about T times larger than a normal network's, so at
T = 1 its softmax saturates: in float32 the gradient of the cross-entropy is exactly zero on most
inputs and attacks on the softmax output (FGSM, PGD on cross-entropy) stall. Carlini & Wagner
(2017, "Defensive distillation is not robust to adversarial examples") break it with a loss on the
logits (the margin), which ``advlab evaluate`` runs alongside; its diagnostics flag the masking.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from advlab.errors import AdvlabError, check_range
from advlab.training import TrainConfig, train_model


class TemperatureLoss:
    """Cross-entropy of softmax(logits / T): the teacher's objective."""

    def __init__(self, temperature: float) -> None:
        self.temperature = check_range(temperature, "temperature", 0.0, 1e4, lo_open=True)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(x)
        return F.cross_entropy(logits / self.temperature, y), logits


class DistillationLoss:
    """Cross-entropy between the teacher's softmax(z_t / T) and the student's softmax(z_s / T)."""

    def __init__(self, teacher: nn.Module, temperature: float) -> None:
        self.teacher = teacher.eval()  # its soft labels are computed under no_grad: its weights stay untouched
        self.temperature = check_range(temperature, "temperature", 0.0, 1e4, lo_open=True)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            soft = F.softmax(self.teacher(x) / self.temperature, dim=1)
        logits = model(x)
        loss = -(soft * F.log_softmax(logits / self.temperature, dim=1)).sum(1).mean()
        return loss, logits


def distill_recipe(temperature: float = 100.0) -> dict:
    """TrainConfig.recipe of the distilled student (the teacher's config follows from it)."""
    return {"method": "distill", "temperature": check_range(temperature, "temperature", 0.0, 1e4, lo_open=True)}


def teacher_config(student: TrainConfig) -> TrainConfig:
    """The teacher: the student's config with the temperature-T cross-entropy recipe."""
    if student.recipe.get("method") != "distill":
        raise AdvlabError(f"not a distillation recipe: {student.recipe}")
    return dataclasses.replace(student, recipe={"method": "distill-teacher",
                                                "temperature": student.recipe["temperature"]})


def distillation_loss(config: TrainConfig, device: torch.device, data_dir: str | Path | None = None,
                      progress: bool = True, **data) -> DistillationLoss:
    """Train (or take from the cache) the teacher config implies; return the student's batch loss."""
    teacher_cfg = teacher_config(config)
    temperature = config.recipe["temperature"]
    teacher, _, _, _ = train_model(teacher_cfg, device, data_dir, batch_loss=TemperatureLoss(temperature),
                                   progress=progress, **data)
    return DistillationLoss(teacher, temperature)
