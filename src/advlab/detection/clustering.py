"""Activation clustering (Chen, Carvalho, Baracaldo, Ludwig, Edwards, Lee, Molloy, Srivastava 2018).

Per class: reduce the representations to 10 dims (PCA), split them into 2 clusters (k-means with a
fixed seed), and call the smaller cluster poisoned only when the split is real: the smaller
cluster holds under 35% of the class AND the silhouette score of the split exceeds 0.10. A clean
class splits into two arbitrary halves with a low silhouette and is left alone (flagging "the
smaller cluster" of every class, as one peer toolkit does, drops about half of each clean class).
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score

from advlab.detection.common import REMOVAL_FACTOR, Detection, check_inputs, class_budgets, principal_components

DIMS = 10
MAX_SIZE = 0.35
MIN_SILHOUETTE = 0.10
SILHOUETTE_SAMPLE = 3000  # silhouette costs O(n^2): score a fixed random subset of larger classes


def cluster_class(r: np.ndarray, dims: int = DIMS, seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict]:
    """2-means on the top-`dims` PCA projection of one class. Returns (assignment with 1 = the
    smaller cluster, a score = how much closer each row is to the smaller cluster's centre, info)."""
    centered = r - r.mean(0)
    reduced = centered @ principal_components(centered, min(dims, r.shape[0] - 1, r.shape[1]))
    kmeans = KMeans(n_clusters=2, n_init=10, random_state=seed).fit(reduced)
    assignment = kmeans.labels_
    small = int(np.bincount(assignment, minlength=2).argmin())
    in_small = (assignment == small).astype(int)
    distances = kmeans.transform(reduced)  # distance to each centre
    score = distances[:, 1 - small] - distances[:, small]
    if len(np.unique(assignment)) < 2:
        silhouette = 0.0
    else:
        sample = min(len(r), SILHOUETTE_SAMPLE)
        silhouette = float(silhouette_score(reduced, assignment, sample_size=sample if sample < len(r) else None,
                                            random_state=seed))
    info = {"small_size": int(in_small.sum()), "small_fraction": float(in_small.mean()), "silhouette": silhouette}
    return in_small, score, info


def activation_clustering(features, labels, poison_fraction: float | None = None, m: int | dict | None = None,
                          classes=None, max_size: float = MAX_SIZE, min_silhouette: float = MIN_SILHOUETTE,
                          removal: float | None = REMOVAL_FACTOR, seed: int = 0) -> Detection:
    """Flag the smaller 2-means cluster of each class where the split is real (size < max_size and
    silhouette > min_silhouette). With a poison bound (poison_fraction or m), at most
    round(removal x m_y) rows per class are removed: the flagged rows closest to the small cluster's
    centre. Without one, whole flagged clusters go (the paper's rule)."""
    x, y = check_inputs(features, labels)
    if poison_fraction is None and m is None:
        budgets = {c: None for c in (np.unique(y) if classes is None else classes)}
    else:
        budgets = class_budgets(y, poison_fraction, m, classes)
    scores = np.zeros(len(y))
    removed = np.zeros(len(y), dtype=bool)
    per_class = {}
    for c, m_c in budgets.items():
        rows = np.flatnonzero(y == int(c))
        in_small, score, info = cluster_class(x[rows], seed=seed)
        flagged = info["small_fraction"] < max_size and info["silhouette"] > min_silhouette
        scores[rows] = score
        drop = np.flatnonzero(in_small) if flagged else np.empty(0, dtype=int)
        if m_c is not None and removal is not None:
            cap = int(round(removal * m_c))
            drop = drop[np.argsort(-score[drop], kind="stable")[:cap]]
        removed[rows[drop]] = True
        per_class[int(c)] = {"n": len(rows), "m": m_c, "flagged": bool(flagged), "removed": int(len(drop)), **info}
    return Detection(scores, removed, "clustering", per_class)
