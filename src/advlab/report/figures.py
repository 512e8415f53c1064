"""Figures as PNG files (matplotlib, headless). Each function saves one figure to a path."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def confusion_matrix_figure(matrix: np.ndarray, classes: list[str], path: Path, title: str = "") -> Path:
    """Row-normalized confusion matrix (true class by row) with counts in the cells."""
    matrix = np.asarray(matrix)
    rates = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(classes)):
        for j in range(len(classes)):
            if matrix[i, j]:
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if rates[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of true class")
    ax.set_title(title)
    return save(fig, path)


def training_curve_figure(history: list[dict], path: Path, title: str = "training") -> Path:
    epochs = [h["epoch"] for h in history]
    fig, ax1 = plt.subplots(figsize=(6, 3.5))
    ax1.plot(epochs, [h["loss"] for h in history], "o-", color="tab:red", label="loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("train loss", color="tab:red")
    ax2 = ax1.twinx()
    ax2.plot(epochs, [h["accuracy"] for h in history], "s-", color="tab:blue", label="accuracy")
    ax2.set_ylabel("train accuracy", color="tab:blue")
    ax1.set_title(title)
    return save(fig, path)


def to_display(image: torch.Tensor) -> np.ndarray:
    """A (C, H, W) tensor in [0, 1] as an array imshow understands."""
    array = image.detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy()
    return array[..., 0] if array.shape[2] == 1 else array


def image_grid_figure(images: torch.Tensor, titles: list[str], path: Path, cols: int = 8,
                      suptitle: str = "") -> Path:
    """A grid of images in [0, 1] with one short title each."""
    n = len(images)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles, strict=False):
        ax.imshow(to_display(image), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    return save(fig, path)
