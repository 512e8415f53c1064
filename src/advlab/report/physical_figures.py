"""Figures for the autoencoder and physical-world attacks (PNG files, matplotlib Agg)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from advlab.report.figures import plt, save, to_display


def autoencoder_attack_figure(source: torch.Tensor, adv: torch.Tensor, reconstruction: torch.Tensor,
                              target: torch.Tensor, path: Path, rows: int = 4, title: str = "") -> Path:
    """The lecture's figure, one row per example: source, perturbed source, the autoencoder's
    output for the perturbed source, and the target it was pushed toward."""
    rows = min(rows, len(source))
    headers = ("source", "perturbed source", "autoencoder output", "target")
    fig, axes = plt.subplots(rows, 4, figsize=(6.4, 1.7 * rows), squeeze=False)
    for r in range(rows):
        for col, images in enumerate((source, adv, reconstruction, target)):
            ax = axes[r, col]
            ax.imshow(to_display(images[r]), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(headers[col], fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return save(fig, path)


def distortion_similarity_figure(rows_by_mode: dict[str, list[dict]], path: Path, norm: str = "linf") -> Path:
    """Input distortion (the budget) against the reconstruction's similarity to the target: MSE,
    SSIM (attack solid, same-size random noise dashed) and the share a classifier reads as the
    target's class."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for i, (mode, rows) in enumerate(rows_by_mode.items()):
        colour = f"C{i}"
        eps = [r["eps"] for r in rows]
        axes[0].plot(eps, [r["mse_to_target"] for r in rows], "o-", color=colour, label=f"{mode} attack")
        axes[0].plot(eps, [r["noise_mse_to_target"] for r in rows], "x--", color=colour, alpha=0.6,
                     label=f"random noise ({mode} sizes)")
        axes[1].plot(eps, [r["ssim_to_target"] for r in rows], "o-", color=colour, label=f"{mode} attack")
        axes[1].plot(eps, [r["noise_ssim_to_target"] for r in rows], "x--", color=colour, alpha=0.6,
                     label="random noise")
        if "target_class_rate" in rows[0]:
            axes[2].plot(eps, [r["target_class_rate"] for r in rows], "o-", color=colour, label=f"{mode} attack")
    titles = ("reconstruction MSE to target (lower: closer)", "reconstruction SSIM to target (higher: closer)",
              "reconstructions classified as target's class")
    for ax, t in zip(axes, titles, strict=True):
        ax.set_xlabel(f"budget eps ({norm})")
        ax.set_title(t, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    axes[2].set_ylim(-0.02, 1.02)
    axes[2].legend(fontsize=7)
    return save(fig, path)


def destruction_rate_figure(rows: list[dict], path: Path, title: str = "",
                            reference: dict[str, float] | None = None) -> Path:
    """Grouped bars: destruction rate per attack (colour) at each eps (group). rows hold attack,
    eps, destruction_rate; reference (label -> rate) draws horizontal lines (e.g. Kurakin et al.)."""
    attacks = list(dict.fromkeys(r["attack"] for r in rows))
    eps_values = sorted({r["eps"] for r in rows})
    width = 0.8 / max(1, len(attacks))
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for i, attack in enumerate(attacks):
        values = [next((r["destruction_rate"] for r in rows if r["attack"] == attack and r["eps"] == e), np.nan)
                  for e in eps_values]
        xs = np.arange(len(eps_values)) + (i - (len(attacks) - 1) / 2) * width
        bars = ax.bar(xs, np.nan_to_num(values), width, label=attack, color=f"C{i}")
        for bar, v in zip(bars, values, strict=True):
            ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 0.01,
                    "n/a" if np.isnan(v) else f"{v:.0%}", ha="center", fontsize=7)
    for j, (label, value) in enumerate((reference or {}).items()):
        ax.axhline(value, color="grey", ls=[":", "--", "-."][j % 3], lw=1, label=label)
    ax.set_xticks(range(len(eps_values)), [f"{e:.3g}" for e in eps_values])
    ax.set_xlabel("eps (Linf)")
    ax.set_ylabel("destruction rate")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(title or "adversarial images destroyed by the print-and-photo simulation", fontsize=9)
    return save(fig, path)


def patch_figure(patches: dict[float, torch.Tensor], examples: torch.Tensor, example_titles: list[str],
                 path: Path, title: str = "") -> Path:
    """The trained patches (one per size) in the top row, and example patched photographs below."""
    cols = max(len(patches), min(len(examples), 8))
    fig, axes = plt.subplots(2, cols, figsize=(1.7 * cols, 3.8), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (size, patch) in zip(axes[0], patches.items(), strict=False):
        ax.imshow(to_display(patch), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"patch, {size:.0%} of area", fontsize=8)
    for ax, image, t in zip(axes[1], examples, example_titles, strict=False):
        ax.imshow(to_display(image), cmap="gray", vmin=0, vmax=1)
        ax.set_title(t, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return save(fig, path)


def patch_size_figure(rows: list[dict], path: Path, target_name: str = "") -> Path:
    """Patch success on held-out images against patch size, digital and after the photo simulation,
    with a random patch of the same size as the baseline."""
    sizes = [r["size"] for r in rows]
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.plot(sizes, [r["success_rate"] for r in rows], "o-", label="patch, placed at random")
    if "photo_success_rate" in rows[0]:
        ax.plot(sizes, [r["photo_success_rate"] for r in rows], "s-", label="patch, then print-and-photo simulation")
    ax.plot(sizes, [r["random_patch_rate"] for r in rows], "x--", color="grey", label="random patch (baseline)")
    ax.set_xlabel("patch size (share of image area)")
    ax.set_ylabel(f"predicted as target {target_name}".strip())
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save(fig, path)


def view_grid_figure(rows: dict[str, torch.Tensor], titles: dict[str, list[str]], path: Path,
                     title: str = "", marks: dict[str, list[bool]] | None = None) -> Path:
    """One row per texture (e.g. original, single view, EOT) of the same views, each view titled
    with its prediction; marks (per row, per view) draw the title in red where True."""
    names = list(rows)
    cols = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(names), cols, figsize=(1.25 * cols, 1.45 * len(names) + 0.4), squeeze=False)
    for r, name in enumerate(names):
        for c in range(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(rows[name]):
                ax.axis("off")
                continue
            ax.imshow(to_display(rows[name][c]), cmap="gray", vmin=0, vmax=1)
            hit = bool(marks and marks[name][c])
            ax.set_title(titles[name][c], fontsize=7, color="C3" if hit else "black")
        axes[r, 0].set_ylabel(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return save(fig, path)


def rotation_curve_figure(curves: dict[str, list[dict]], path: Path, target_name: str, true_name: str,
                          reference: float | None = None) -> Path:
    """Share of views classified as the target (solid) and as the true class (dashed) against the
    rotation angle, one colour per texture; reference draws the paper's figure as a grey line."""
    fig, ax = plt.subplots(figsize=(6.4, 3.5))
    for i, (name, rows) in enumerate(curves.items()):
        angles = [r["angle"] for r in rows]
        ax.plot(angles, [r["target_rate"] for r in rows], "o-", ms=3, color=f"C{i}", label=f"{name}: '{target_name}'")
        ax.plot(angles, [r["true_rate"] for r in rows], "--", color=f"C{i}", alpha=0.6, label=f"{name}: '{true_name}'")
    if reference is not None:
        ax.axhline(reference, color="grey", ls=":", lw=1, label=f"Athalye et al. turtle: {reference:.0%} target")
    ax.set_xlabel("rotation about the vertical axis (degrees)")
    ax.set_ylabel("share of views")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xticks(range(0, 361, 45))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    return save(fig, path)


def texture_figure(textures: dict[str, torch.Tensor], path: Path, title: str = "") -> Path:
    """The textures (UV maps: longitude across, latitude down) side by side."""
    wide = max(t.shape[-1] / t.shape[-2] for t in textures.values())
    fig, axes = plt.subplots(1, len(textures), figsize=((1.2 + 1.3 * wide) * len(textures), 2.2), squeeze=False)
    for ax, (name, texture) in zip(axes[0], textures.items(), strict=True):
        ax.imshow(to_display(texture), cmap="gray", vmin=0, vmax=1)
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9, y=1.04)
    return save(fig, path)


def strength_curve_figure(curves: dict[str, list[dict]], path: Path, train_strength: float, label: str) -> Path:
    """Attack success against the test deformation strength, one line per patch."""
    fig, ax = plt.subplots(figsize=(5.8, 3.4))
    for i, (name, rows) in enumerate(curves.items()):
        style = "x--" if "random" in name else "o-"
        ax.plot([r["strength"] for r in rows], [r["success_rate"] for r in rows], style, color=f"C{i}", label=name)
    ax.axvline(train_strength, color="grey", ls=":", lw=1, label=f"TPS training strength {train_strength:g}")
    ax.set_xlabel("test deformation strength (max control-point shift, share of the patch side)")
    ax.set_ylabel(label)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save(fig, path)
