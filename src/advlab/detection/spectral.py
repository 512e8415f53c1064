"""Spectral signatures (Tran, Li and Madry, NeurIPS 2018).

Poisons that plant a backdoor leave a trace along the top principal direction of their class's
representations. Per class y with poison bound m_y: c = mean(R_y), v = top right singular vector of
R_y - c, score tau_i = ((r_i - c) . v)^2, remove the round(1.5 m_y) largest. Scores are centred
(the original code scored |v . r_i| on uncentred r, which depends on the arbitrary sign of v).
"""

from __future__ import annotations

import numpy as np

from advlab.detection.common import (
    REMOVAL_FACTOR,
    Detection,
    check_inputs,
    class_budgets,
    principal_components,
    removal_count,
    top_mask,
)


def spectral_scores(r: np.ndarray) -> np.ndarray:
    """tau_i = ((r_i - c) . v)^2 for one class's representations r (n, d)."""
    centered = r - r.mean(0)
    v = principal_components(centered, 1)[:, 0]
    return (centered @ v) ** 2


def spectral_signatures(features, labels, poison_fraction: float | None = None, m: int | dict | None = None,
                        classes=None, removal: float = REMOVAL_FACTOR) -> Detection:
    """Score every row of the scanned classes; remove round(removal x m_y) per class."""
    x, y = check_inputs(features, labels)
    budgets = class_budgets(y, poison_fraction, m, classes)
    scores = np.zeros(len(y))
    removed = np.zeros(len(y), dtype=bool)
    per_class = {}
    for c, m_c in budgets.items():
        rows = np.flatnonzero(y == c)
        scores[rows] = spectral_scores(x[rows])
        drop = top_mask(scores[rows], removal_count(m_c, removal, len(rows)))
        removed[rows[drop]] = True
        per_class[c] = {"n": len(rows), "m": m_c, "removed": int(drop.sum())}
    return Detection(scores, removed, "spectral", per_class)
