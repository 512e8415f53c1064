"""Transferability: examples crafted on one model, sent to another (Szegedy et al. 2014; Papernot et
al. 2016, "Transferability in machine learning"). Models trained on disjoint halves of the training
set and of different architectures show how much an attacker needs to know.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from advlab.data import ImageDataset, load_dataset
from advlab.errors import AdvlabError
from advlab.models import architecture
from advlab.training import default_config, train_model

HALVES = ("A", "B", "full")


def split_halves(data: ImageDataset, seed: int = 0) -> dict[str, ImageDataset]:
    """Two disjoint halves of a training set by a fixed permutation (the same every time)."""
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    cut = len(data) // 2
    return {"A": data.subset(order[:cut], name=f"{data.name}-half-A"),
            "B": data.subset(order[cut:], name=f"{data.name}-half-B"), "full": data}


def parse_model_specs(text: str) -> list[tuple[str, str]]:
    """'mnist_cnn:A,lenet:B' -> [('mnist_cnn', 'A'), ('lenet', 'B')] (half defaults to full)."""
    specs = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        arch, _, half = part.partition(":")
        half = half or "full"
        architecture(arch)
        if half not in HALVES:
            raise AdvlabError(f"unknown training half {half!r} in {part!r}; choose A, B or full")
        specs.append((arch, half))
    if len(specs) < 2:
        raise AdvlabError("a transfer matrix needs at least two models, e.g. --models mnist_cnn:A,lenet:B")
    if len(set(specs)) != len(specs):
        raise AdvlabError(f"duplicate models in {text!r}")
    return specs


def train_on_halves(specs: list[tuple[str, str]], dataset: str, device: torch.device,
                    data_dir: str | Path | None = None, progress: bool = True) -> dict[str, tuple[nn.Module, dict]]:
    """Each (architecture, half) trained with its data set's default recipe on that half (cached: the
    recipe records the half, so each half has its own cache entry)."""
    train = load_dataset(dataset, "train", data_dir)
    test = load_dataset(dataset, "test", data_dir)
    halves = split_halves(train)
    models = {}
    for arch, half in specs:
        recipe = {"method": "standard"} if half == "full" else {"method": "standard", "train_half": half,
                                                                  "split_seed": 0}
        config = default_config(dataset, model=arch, recipe=recipe)
        model, meta, _, _ = train_model(config, device, data_dir, progress=progress, train_data=halves[half],
                                        test_data=test)
        models[f"{arch}:{half}"] = (model.eval(), meta)
    return models


def transfer_matrix(models: dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor, attack: str = "pgd",
                    eps: float = 0.3, steps: int = 40) -> dict:
    """matrix[i][j]: share of images correctly classified by source i and target j whose adversarial
    example crafted (white-box) on i is misclassified by j. The diagonal is white-box success."""
    from advlab.attacks import FGSM, PGD

    if attack == "fgsm":
        make = FGSM(eps=eps, norm="linf")
    elif attack == "pgd":
        make = PGD(eps=eps, steps=steps, step_size=2.5 * eps / steps, norm="linf", random_start=False)
    else:
        raise AdvlabError(f"unknown transfer attack {attack!r}; choose fgsm or pgd")
    names = list(models)
    with torch.no_grad():
        correct = {k: m.eval()(x).argmax(1) == y for k, m in models.items()}
    matrix, counts = [], []
    for src in names:
        adv = make(models[src], x, y).adv
        row, row_counts = [], []
        for dst in names:
            both = correct[src] & correct[dst]
            with torch.no_grad():
                fooled = models[dst](adv).argmax(1) != y
            row.append(float((fooled & both).sum() / max(int(both.sum()), 1)))
            row_counts.append(int(both.sum()))
        matrix.append(row)
        counts.append(row_counts)
    return {"names": names, "matrix": matrix, "images": counts, "attack": attack, "eps": eps,
            "steps": steps if attack == "pgd" else 1}
