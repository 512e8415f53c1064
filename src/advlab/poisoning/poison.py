"""Poisoned training sets and the two numbers that judge a backdoor.

``poison_dataset(train, trigger, target="deer", n_poison=500)`` takes n images of other classes (or
of one source class), stamps the trigger, relabels them as the target and returns the new set with
a mask of which rows are poisoned (for evaluation only: a defense never sees it). The poisons
replace the images they came from, so the set keeps its size (as in the SPECTRE reference).

- clean accuracy: the model on the untouched test set;
- attack success rate: the share of triggered test images of the other classes (or the source
  class) that the model predicts as the target.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from advlab.data import ImageDataset
from advlab.errors import AdvlabError, check_range
from advlab.models.inference import predict_logits
from advlab.poisoning.triggers import Trigger
from advlab.runtime import BatchSize

DEFAULT_TARGET = "deer"


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float [0, 1] images to the uint8 an image file would hold (round to nearest)."""
    return (x * 255).round().clamp(0, 255).to(torch.uint8)


def apply_to_dataset(data: ImageDataset, trigger: Trigger, training: bool = False,
                     generator: torch.Generator | None = None, batch_size: int = 2000) -> torch.Tensor:
    """The trigger applied to every image of data, stored as uint8 like the data itself."""
    parts = [to_uint8(trigger(x, training=training, generator=generator)) for x, _ in data.batches(batch_size)]
    return torch.cat(parts) if parts else data.images[:0].clone()


@dataclass
class PoisonedDataset:
    """The poisoned training set, which rows are poisoned, and how they were made."""

    data: ImageDataset
    poisoned: torch.Tensor  # bool (n,)
    original_labels: torch.Tensor
    target: int
    source: int | None
    trigger: Trigger
    seed: int

    @property
    def n_poison(self) -> int:
        return int(self.poisoned.sum())

    def describe(self) -> dict:
        """Everything that determines the poisoned set (it goes into the training recipe)."""
        return {"trigger": self.trigger.describe(), "target": self.data.classes[self.target],
                "source": None if self.source is None else self.data.classes[self.source],
                "n_poison": self.n_poison, "seed": self.seed, "n": len(self.data), "base": self.data.name}

    def without(self, removed: np.ndarray | torch.Tensor, name: str | None = None) -> ImageDataset:
        """The training set minus the rows a defense removed."""
        removed = torch.as_tensor(np.asarray(removed), dtype=torch.bool)
        if removed.shape != (len(self.data),):
            raise AdvlabError(f"removal mask has shape {tuple(removed.shape)}, expected ({len(self.data)},)")
        return self.data.subset(torch.nonzero(~removed).flatten(), name=name or f"{self.data.name}-filtered")


def poison_dataset(data: ImageDataset, trigger: Trigger, target: str | int = DEFAULT_TARGET,
                   n_poison: int | None = None, fraction: float | None = None, source: str | int | None = None,
                   seed: int = 0) -> PoisonedDataset:
    """Poison n_poison images (or a fraction of the whole set) drawn from every class but the
    target, or from `source` only: trigger stamped (training variant), label set to target."""
    target_index = data.class_index(target)
    source_index = None if source is None else data.class_index(source)
    if source_index == target_index:
        raise AdvlabError(f"source and target are the same class ({data.classes[target_index]})")
    if (n_poison is None) == (fraction is None):
        raise AdvlabError("give exactly one of n_poison (a count) or fraction (of the training set)")
    if fraction is not None:
        n_poison = int(round(check_range(fraction, "poison fraction", 0.0, 1.0, lo_open=True) * len(data)))
    eligible = data.labels != target_index if source_index is None else data.labels == source_index
    candidates = torch.nonzero(eligible).flatten()
    if int(n_poison) != n_poison or n_poison < 1 or n_poison > len(candidates):
        where = "non-target" if source_index is None else f"'{data.classes[source_index]}'"
        raise AdvlabError(f"n_poison must be in 1..{len(candidates)} (the {where} images), got {n_poison}")
    generator = torch.Generator().manual_seed(seed)
    chosen = candidates[torch.randperm(len(candidates), generator=generator)[: int(n_poison)]].sort().values
    images = data.images.clone()
    labels = data.labels.clone()
    images[chosen] = apply_to_dataset(data.subset(chosen), trigger, training=True, generator=generator)
    labels[chosen] = target_index
    poisoned = torch.zeros(len(data), dtype=torch.bool)
    poisoned[chosen] = True
    meta = {**data.meta, "poisoned": True}
    return PoisonedDataset(ImageDataset(images, labels, data.classes, f"{data.name}-poisoned", meta), poisoned,
                           data.labels.clone(), target_index, source_index, trigger, seed)


def triggered_test_set(test: ImageDataset, trigger: Trigger, target: str | int = DEFAULT_TARGET,
                       source: str | int | None = None) -> ImageDataset:
    """Test images of the other classes (or the source class) with the trigger, true labels kept."""
    target_index = test.class_index(target)
    keep = test.labels != target_index if source is None else test.labels == test.class_index(source)
    subset = test.subset(torch.nonzero(keep).flatten(), name=f"{test.name}-triggered")
    return ImageDataset(apply_to_dataset(subset, trigger), subset.labels, test.classes, subset.name, subset.meta)


def attack_success_rate(model: nn.Module, test: ImageDataset, trigger: Trigger, target: str | int = DEFAULT_TARGET,
                        source: str | int | None = None, device: torch.device | str = "cpu",
                        batch_size: int | BatchSize = 500) -> float:
    """Share of triggered test images of other classes (or the source) predicted as the target."""
    triggered = triggered_test_set(test, trigger, target, source)
    predictions = predict_logits(model, triggered, device, batch_size).argmax(1)
    return (predictions == test.class_index(target)).float().mean().item()


def clean_accuracy(model: nn.Module, test: ImageDataset, device: torch.device | str = "cpu",
                   batch_size: int | BatchSize = 500) -> float:
    return (predict_logits(model, test, device, batch_size).argmax(1) == test.labels).float().mean().item()


def save_poisoned_folder(poisoned: PoisonedDataset, out: str | Path) -> Path:
    """Write the poisoned set as out/images/<class>/<index>.png plus out/manifest.json naming the
    poisoned files. The manifest sits outside the image folder: a defense reads only images/.
    Built in a temporary sibling and renamed into place, so a failure leaves nothing behind."""
    out = Path(out)
    if out.exists():
        raise AdvlabError(f"{out} already exists; choose a new folder for the poisoned data")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        data = poisoned.data
        for name in data.classes:
            (tmp / "images" / name).mkdir(parents=True)
        files = []
        for index in range(len(data)):
            image = data.images[index].permute(1, 2, 0).numpy()
            image = image[..., 0] if image.shape[2] == 1 else image
            relative = f"images/{data.classes[int(data.labels[index])]}/{index:06d}.png"
            Image.fromarray(image).save(tmp / relative)
            files.append(relative)
        manifest = {**poisoned.describe(), "classes": data.classes,
                    "poisoned_files": [files[i] for i in torch.nonzero(poisoned.poisoned).flatten().tolist()],
                    "original_labels": {files[i]: data.classes[int(poisoned.original_labels[i])]
                                        for i in torch.nonzero(poisoned.poisoned).flatten().tolist()}}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
