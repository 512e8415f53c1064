"""Figures of white-box attacks: the lecture's triptych (clean, perturbation, adversarial), the
fooling-image grid, and robust accuracy versus eps with one curve per attack."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from advlab.report.figures import plt, save, to_display
from advlab.runtime import eval_mode


def _label(classes: Sequence[str] | None, k: int) -> str:
    return classes[k] if classes is not None and k < len(classes) else str(k)


def triptych_figure(model: torch.nn.Module, x: torch.Tensor, adv: torch.Tensor, path: Path,
                    classes: Sequence[str] | None = None, title: str = "", magnify: float | None = None) -> Path:
    """One row per sample: clean image (label, confidence), perturbation magnified, adversarial image.

    magnify=None scales each perturbation to fill the visible range (gray = no change); a number
    multiplies it (the panda figure's x10 style) around gray.
    """
    with eval_mode(model), torch.no_grad():
        p_clean = model(x).softmax(1).cpu()
        p_adv = model(adv).softmax(1).cpu()
    x, adv = x.cpu(), adv.cpu()
    n = len(x)
    fig, axes = plt.subplots(n, 3, figsize=(6.6, 2.3 * n), squeeze=False)
    for i in range(n):
        delta = adv[i] - x[i]
        if magnify is None:
            scale = float(delta.abs().max()) or 1.0
            shown, how = 0.5 + 0.5 * delta / scale, f"scaled x{0.5 / scale:.3g}"
        else:
            shown, how = 0.5 + magnify * delta, f"x{magnify:g}"
        c_clean, c_adv = int(p_clean[i].argmax()), int(p_adv[i].argmax())
        panels = [(x[i], f"{_label(classes, c_clean)} ({p_clean[i, c_clean]:.1%})"),
                  (shown.clamp(0, 1), f"perturbation ({how})\nL2 {delta.norm():.2f}, Linf {delta.abs().max():.2f}"),
                  (adv[i], f"{_label(classes, c_adv)} ({p_adv[i, c_adv]:.1%})")]
        for ax, (image, text) in zip(axes[i], panels, strict=True):
            ax.imshow(to_display(image), cmap="gray", vmin=0, vmax=1)
            ax.set_title(text, fontsize=8)
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    return save(fig, path)


def fooling_grid_figure(images: torch.Tensor, target: torch.Tensor, confidence: torch.Tensor,
                        predicted: torch.Tensor, path: Path, classes: Sequence[str] | None = None,
                        per_row: int | None = None, title: str = "") -> Path:
    """Fooling images, one row per target class, each titled with the model's label and confidence."""
    labels = target.unique().tolist()
    per_row = per_row or max(int((target == labels[0]).sum()), 1)
    fig, axes = plt.subplots(len(labels), per_row, figsize=(1.3 * per_row, 1.45 * len(labels)), squeeze=False)
    for r, c in enumerate(labels):
        idx = (target == c).nonzero().squeeze(1)[:per_row]
        for k, ax in enumerate(axes[r]):
            ax.axis("off")
            if k < len(idx):
                i = int(idx[k])
                ax.imshow(to_display(images[i]), cmap="gray", vmin=0, vmax=1)
                hit = int(predicted[i]) == c
                ax.set_title(f"{_label(classes, int(predicted[i]))} {confidence[i]:.0%}", fontsize=7,
                             color="black" if hit else "gray")
    if title:
        fig.suptitle(title, fontsize=10)
    return save(fig, path)


def robust_curve_figure(curves: dict[str, tuple[Sequence[float], Sequence[float]]], path: Path,
                        norm: str = "linf", title: str = "", medians: dict[str, float] | None = None) -> Path:
    """Robust accuracy versus eps, one curve per attack; curves maps name -> (eps list, accuracies)."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for name, (eps, acc) in curves.items():
        eps, acc = np.asarray(eps, float), np.asarray(acc, float)
        dense = len(eps) > 12
        label = name + (f" (median {medians[name]:.2f})" if medians and name in medians else "")
        ax.plot(eps, acc, "-" if dense else "o-", label=label, drawstyle="steps-post" if dense else "default")
    ax.set_xlabel(f"eps ({'L-inf' if norm == 'linf' else 'L2'})")
    ax.set_ylabel("robust accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    return save(fig, path)
