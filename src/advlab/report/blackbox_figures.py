"""Black-box figures: success rate against the query budget, substitute training, transfer matrix."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from advlab.report.figures import plt, save


def success_curve(queries_at_success: np.ndarray, budgets: np.ndarray) -> np.ndarray:
    """Share of images broken within each budget (queries_at_success: -1 for never broken)."""
    q = np.asarray(queries_at_success)
    if q.size == 0:
        return np.zeros(len(budgets))
    return np.array([((q >= 0) & (q <= b)).mean() for b in budgets])


def budget_grid(max_queries: int, points: int = 60) -> np.ndarray:
    return np.unique(np.round(np.logspace(0, np.log10(max(max_queries, 2)), points)).astype(int))


def success_vs_queries_figure(curves: dict[str, np.ndarray], max_queries: int, path: Path, title: str = "",
                              reference: dict[str, float] | None = None) -> Path:
    """One line per attack: success rate (on correctly classified images) against queries per image.

    curves maps a label to per-image queries_at_success; reference draws horizontal lines (e.g.
    white-box PGD success and 90% of it)."""
    budgets = budget_grid(max_queries)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, q in curves.items():
        ax.plot(budgets, success_curve(q, budgets), label=label)
    for label, value in (reference or {}).items():
        ax.axhline(value, linestyle="--", linewidth=1, color="gray")
        ax.text(budgets[0], value, label, fontsize=8, va="bottom", color="gray")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("query budget per image")
    ax.set_ylabel("success rate")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(title)
    return save(fig, path)


def substitute_figure(history: list[dict], path: Path, title: str = "") -> Path:
    """Substitute accuracy and transfer rate after each Jacobian augmentation round vs oracle queries."""
    q = [h["oracle_queries"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(q, [h["substitute_accuracy"] for h in history], "o-", label="substitute accuracy")
    ax.plot(q, [h["transfer_rate"] for h in history], "s-", label="transfer rate (oracle misclassified)")
    for h in history:
        ax.annotate(f"rho={h['round']}", (h["oracle_queries"], h["substitute_accuracy"]), fontsize=7,
                    textcoords="offset points", xytext=(2, 4))
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("oracle queries (labels)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    ax.set_title(title)
    return save(fig, path)


def transfer_matrix_figure(matrix: np.ndarray, names: list[str], path: Path, title: str = "") -> Path:
    """Heatmap: row = model the examples were crafted on, column = model they were sent to."""
    matrix = np.asarray(matrix, dtype=float)
    fig, ax = plt.subplots(figsize=(1.3 * len(names) + 2.5, 1.1 * len(names) + 1.8))
    im = ax.imshow(matrix, cmap="Reds", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("target (evaluated on)")
    ax.set_ylabel("source (crafted on)")
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=9,
                    color="white" if matrix[i, j] > 0.6 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, label="attack success rate")
    ax.set_title(title)
    return save(fig, path)
