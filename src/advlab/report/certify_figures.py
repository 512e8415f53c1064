"""Figures of randomized-smoothing certification: certified accuracy against L2 radius."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from advlab.evaluation.certified import CertificationResult
from advlab.report.figures import plt, save

# Cohen et al. 2019, ResNet-110 on CIFAR-10, n = 100,000, alpha = 0.001, 500 images (certified accuracy at
# r = 0 / 0.25 / 0.5 / 0.75 / 1.0, as recorded in the project's anchors table).
COHEN_CIFAR10 = {
    0.25: ((0.0, 0.25, 0.5, 0.75, 1.0), (0.75, 0.60, 0.43, 0.27, 0.0)),
    0.5: ((0.0, 0.25, 0.5, 0.75, 1.0), (0.65, 0.55, 0.41, 0.32, 0.23)),
}


def certified_accuracy_figure(results: Sequence[tuple[str, CertificationResult]], path: Path, title: str = "",
                              reference: dict[str, tuple[Sequence[float], Sequence[float]]] | None = None) -> Path:
    """One step curve per result (certified accuracy at radius >= r), its radius ceiling as a dotted
    line, and optional published points (label -> (radii, accuracies)) as markers."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for (label, result), color in zip(results, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False):
        radii, acc = result.curve()
        ax.plot(radii, acc, color=color, label=f"{label} (n={result.n:,}, {len(result.records)} images)")
        ax.axvline(result.ceiling, color=color, linestyle=":", linewidth=1)
    for label, (radii, acc) in (reference or {}).items():
        ax.plot(radii, acc, "x--", linewidth=0.8, label=label)
    ax.set_xlabel("L2 radius (pixel scale [0, 1])")
    ax.set_ylabel("certified accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "randomized smoothing: certified accuracy (dotted: radius ceiling)")
    return save(fig, path)
