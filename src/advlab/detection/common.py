"""What every detector shares (no base class: a detector is a function): input checks, per-class
poison budgets, and the result shape.

A detector is a function ``(features, labels, poison_fraction=... or m=...) -> Detection`` that
unpacks as ``scores, removed``: a suspicion score per row (higher = more likely poisoned, comparable
within a class) and a boolean mask of the rows to drop before retraining.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from advlab.errors import AdvlabError, check_range
from advlab.robust.mean import as_matrix

REMOVAL_FACTOR = 1.5  # remove round(1.5 m) per class: Tran et al. 2018 and Hayase et al. 2021


@dataclass
class Detection:
    """scores (n,), removed (n,) bool, and per-class details (budget, chosen k, cluster sizes...)."""

    scores: np.ndarray
    removed: np.ndarray
    method: str
    per_class: dict = field(default_factory=dict)

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.scores, self.removed))

    def to_dict(self) -> dict:
        return {"method": self.method, "removed": int(self.removed.sum()), "per_class": self.per_class}


def check_inputs(features, labels) -> tuple[np.ndarray, np.ndarray]:
    """features as float64 (n, d) and labels as int (n,), or a user error."""
    x = as_matrix(features, "features")
    y = np.asarray(labels)
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise AdvlabError(f"labels must be a 1-D array of length {x.shape[0]} (one per feature row), "
                          f"got shape {y.shape}")
    if y.dtype.kind not in "iu":
        if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise AdvlabError(f"labels must be integer class indices, got dtype {y.dtype}")
    return x, y.astype(np.int64)


def class_budgets(labels: np.ndarray, poison_fraction: float | None = None, m: int | dict | None = None,
                  classes=None) -> dict[int, int]:
    """m_y, the assumed number of poisons, for every class to scan.

    poison_fraction: m_y = round(fraction x n_y). m: one count for every scanned class, or a dict
    {class: count} (then only those classes are scanned unless `classes` says otherwise).
    """
    present = [int(c) for c in np.unique(labels)]
    if classes is None:
        classes = sorted(int(c) for c in m) if isinstance(m, dict) else present
    classes = [int(c) for c in classes]
    missing = [c for c in classes if c not in present]
    if missing:
        raise AdvlabError(f"class(es) {missing} have no rows in labels (present: {present})")
    if (poison_fraction is None) == (m is None):
        raise AdvlabError("give exactly one of poison_fraction (e.g. 0.05) or m (poisons per class)")
    budgets = {}
    for c in classes:
        n_c = int((labels == c).sum())
        if poison_fraction is not None:
            fraction = check_range(poison_fraction, "poison fraction", 0.0, 0.5, lo_open=True)
            budgets[c] = int(round(fraction * n_c))
        else:
            count = m.get(c, 0) if isinstance(m, dict) else m
            if int(count) != count or count < 0:
                raise AdvlabError(f"m must be a non-negative integer, got {count!r}")
            if count > n_c / 2:
                raise AdvlabError(f"m = {count} is more than half of class {c}'s {n_c} rows; "
                                  "the detectors assume poisons are a minority")
            budgets[c] = int(count)
    return budgets


def removal_count(m: int, factor: float = REMOVAL_FACTOR, n: int | None = None) -> int:
    count = int(round(factor * m))
    return count if n is None else min(count, n)


def top_mask(scores: np.ndarray, count: int) -> np.ndarray:
    """Boolean mask of the `count` largest scores (ties broken by position, deterministically)."""
    mask = np.zeros(len(scores), dtype=bool)
    if count > 0:
        mask[np.argsort(-scores, kind="stable")[:count]] = True
    return mask


def principal_components(centered: np.ndarray, k: int) -> np.ndarray:
    """The top-k right singular vectors (d, k) of an already centred matrix, largest first.

    A full SVD for small matrices; for large ones Lanczos (scipy ``svds``) with a fixed start
    vector, which is far cheaper for k << min(n, d) and gives the same subspace.
    """
    from scipy.sparse.linalg import svds

    n, d = centered.shape
    k = min(k, n, d)
    if min(n, d) <= 600 or k >= min(n, d) - 1:
        _, _, vt = np.linalg.svd(centered, full_matrices=False)
        return vt[:k].T
    start = np.ones(min(n, d)) / np.sqrt(min(n, d))
    _, values, vt = svds(centered, k=k, v0=start, tol=1e-10)
    order = np.argsort(-values)
    return vt[order].T
