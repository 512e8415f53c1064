"""The lecture's backdoor figure: the target class's representations, clean and poisoned marked.

Top-6 PCA projection drawn as three scatter panels (PC1-PC2, PC3-PC4, PC5-PC6), once as is and once
after whitening with the robust covariance estimated from clean + poisoned points together: the
poisons hide among the clean points before and stand apart after (Hayase et al. 2021, SPECTRE).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from advlab.report.figures import plt, save

PAIRS = ((0, 1), (2, 3), (4, 5))


def projection_figure(before: np.ndarray, after: np.ndarray | None, poisoned: np.ndarray, path: Path,
                      title: str = "", names: tuple[str, str] = ("clean", "poisoned")) -> Path:
    """Scatter pairs of the first 6 columns of `before` (PCA scores) and of `after` (the same points
    whitened), clean in blue and poisoned in red; fewer columns give fewer panels."""
    poisoned = np.asarray(poisoned, dtype=bool)
    rows = [("top-6 PCA projection", before)] + ([("after whitening with the robust covariance", after)]
                                                 if after is not None else [])
    pairs = [p for p in PAIRS if p[1] < before.shape[1]] or [(0, 0)]
    fig, axes = plt.subplots(len(rows), len(pairs), figsize=(4 * len(pairs), 3.8 * len(rows)), squeeze=False)
    for r, (label, points) in enumerate(rows):
        for c, (i, j) in enumerate(pairs):
            ax = axes[r, c]
            ax.scatter(points[~poisoned, i], points[~poisoned, j], s=3, alpha=0.35, c="tab:blue",
                       label=f"{names[0]} ({int((~poisoned).sum())})", rasterized=True)
            ax.scatter(points[poisoned, i], points[poisoned, j], s=5, alpha=0.7, c="tab:red",
                       label=f"{names[1]} ({int(poisoned.sum())})", rasterized=True)
            ax.set_xlabel(f"component {i + 1}")
            ax.set_ylabel(f"component {j + 1}")
            if c == 0:
                ax.set_title(label, loc="left", fontsize=10)
            if r == 0 and c == len(pairs) - 1:
                ax.legend(loc="best", fontsize=8, markerscale=3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save(fig, path)


def score_histogram_figure(scores: dict[str, np.ndarray], poisoned: np.ndarray, path: Path, title: str = "") -> Path:
    """Per detector, the distribution of its scores on the target class, clean against poisoned."""
    poisoned = np.asarray(poisoned, dtype=bool)
    fig, axes = plt.subplots(1, len(scores), figsize=(4 * len(scores), 3.2), squeeze=False)
    for ax, (name, s) in zip(axes[0], scores.items(), strict=True):
        s = np.asarray(s, dtype=float)
        low, high = np.percentile(s, 0), np.percentile(s, 100)
        bins = np.linspace(low, high if high > low else low + 1, 50)
        ax.hist(s[~poisoned], bins=bins, alpha=0.6, color="tab:blue", label="clean", log=True)
        ax.hist(s[poisoned], bins=bins, alpha=0.6, color="tab:red", label="poisoned", log=True)
        ax.set_title(name)
        ax.set_xlabel("score")
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save(fig, path)
