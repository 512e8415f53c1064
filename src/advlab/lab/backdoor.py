"""The backdoor panel's poisoned model: the pipeline of `advlab backdoor` on a small MNIST budget,
built from the same library functions (poison_dataset, train_model, extract_features, SPECTRE).

Its training config (recipe included: the poisoning and the subset) keys the model cache, so the
model trains once (seconds for LeNet) and later lab sessions reuse it.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from advlab.data import ImageDataset
from advlab.detection import detect, extract_features
from advlab.detection.spectre import pca_scores
from advlab.poisoning import PoisonedDataset, attack_success_rate, make_trigger, poison_dataset
from advlab.training import default_config, train_model


@dataclass(frozen=True)
class LabBackdoorSettings:
    """A BadNets patch on MNIST: n_poison images of the other classes stamped and relabelled target."""

    train_subset: int = 4000
    n_poison: int = 300
    target: str = "0"
    patch_size: int = 4
    model: str = "lenet"
    epochs: int = 4
    lr: float = 3e-3
    seed: int = 0
    test_images: int = 1000


@dataclass
class PoisonedModel:
    model: nn.Module
    poisoned: PoisonedDataset
    summary: dict
    projection_png: bytes


def _projection_png(points: np.ndarray, is_poison: np.ndarray, removed: np.ndarray, title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    clean = ~is_poison
    ax.scatter(points[clean, 0], points[clean, 1], s=8, c="tab:blue", alpha=0.6, label="clean")
    ax.scatter(points[is_poison, 0], points[is_poison, 1], s=8, c="tab:red", alpha=0.6, label="poisoned")
    ax.scatter(points[removed, 0], points[removed, 1], s=40, facecolors="none", edgecolors="black", linewidths=0.7,
               label="removed by SPECTRE")
    ax.set_xlabel("principal component 1")
    ax.set_ylabel("principal component 2")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def build_poisoned_model(train: ImageDataset, test: ImageDataset, settings: LabBackdoorSettings,
                         device: torch.device | str = "cpu", progress=None) -> PoisonedModel:
    """Poison a subset of train, train (or reuse) the model, measure it, and run SPECTRE on the
    target class's penultimate representations."""
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(settings.seed))
    subset = train.subset(order[: settings.train_subset].sort().values, name=f"{train.name}-{settings.train_subset}")
    trigger = make_trigger("patch", size=settings.patch_size)
    poisoned = poison_dataset(subset, trigger, settings.target, n_poison=settings.n_poison, seed=settings.seed)
    recipe = {"method": "backdoor", "poisoning": poisoned.describe(),
              "subset": {"n": settings.train_subset, "seed": settings.seed}}
    config = default_config("mnist", model=settings.model, epochs=settings.epochs, lr=settings.lr, recipe=recipe)
    if progress:
        progress(0.05, "training (or reusing) the poisoned model")
    test = test.head(settings.test_images)
    model, meta, path, cached = train_model(config, torch.device(device), train_data=poisoned.data, test_data=test,
                                            progress=False)
    if progress:
        progress(0.7, "representations and SPECTRE")
    target = poisoned.target
    labels = poisoned.data.labels.numpy()
    rows = np.flatnonzero(labels == target)
    features = extract_features(model, poisoned.data.subset(torch.from_numpy(rows)), device=device)
    detection = detect("spectre", features, labels[rows], m={target: settings.n_poison})
    truth = poisoned.poisoned.numpy()[rows]
    removed = detection.removed
    points = pca_scores(features, 2)
    name = poisoned.data.classes[target]
    summary = {
        "settings": asdict(settings), "checkpoint": str(path), "cached": cached,
        "target": int(target), "target_name": name, "trigger": trigger.describe(),
        "clean_accuracy": float(meta["test_accuracy"]),
        "attack_success": float(attack_success_rate(model, test, trigger, target, None, device)),
        "class_size": int(len(rows)), "poisons_in_class": int(truth.sum()),
        "removed": int(removed.sum()), "poisons_removed": int((removed & truth).sum()),
        "clean_removed": int((removed & ~truth).sum()), "poisons_missed": int((~removed & truth).sum()),
    }
    png = _projection_png(points, truth, removed, f"'{name}' training images: penultimate layer, top-2 PCA")
    return PoisonedModel(model.eval(), poisoned, summary, png)
