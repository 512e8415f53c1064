"""SPECTRE (Hayase, Kong, Somani and Oh, ICML 2021): robust covariance, whitening, QUE scores.

Spectral signatures look only at the top principal direction of a class's representations, where
natural variation can drown the poisons. SPECTRE first estimates the covariance of the clean
representations robustly (the filter in :mod:`advlab.robust.covariance`), whitens with it, so the
clean points become isotropic and the poisons the only thing sticking out, and scores with QUE.
The dimension k of the PCA it works in is chosen per class by the op_k criterion (section 1.4 of
the algorithm notes): the k whose removals leave the most variance unexplained by the kept points.

Cap on k (a deviation from the reference, for speed and stability): the sweep over k in
{1, 4, 9, ..., 100} stops at ``max_k`` (default 36) and at the largest k with 2 k^2 <= n. The
filter's fourth-moment operator is k^2 x k^2; with fewer than about 2 k^2 points its top eigenvalue
reflects sampling noise rather than poisons, so the filter keeps removing clean points round after
round until its budget is spent, and each round costs more Lanczos products of O(n k^2) each (on
the notes' oracle, n = 5250: k = 49 takes ~30 s, k = 64 ~15 min on a busy 2-core CPU, k <= 36 a
few seconds). On that oracle every k from 9 to 64 finds the poisons, so the cap loses nothing there.
"""

from __future__ import annotations

import time

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
from advlab.errors import AdvlabError
from advlab.robust.covariance import inverse_sqrt, robust_covariance
from advlab.robust.que import DEFAULT_ALPHA, que_op_statistic, que_scores

PCA_DIMS = 100
SWEEP = tuple(k * k for k in range(1, 11))  # 1, 4, 9, ..., 100 as in the reference
MAX_K = 36


def pca_scores(r: np.ndarray, dims: int = PCA_DIMS) -> np.ndarray:
    """Z = (R - c) U: the projection on the top principal directions (not rescaled), c the mean of
    all rows, poisons included (section 1.1)."""
    centered = r - r.mean(0)
    return centered @ principal_components(centered, dims)


def whiten_robustly(z: np.ndarray, m: int, tau: float = 0.1, c: float = 10.0, budget_factor: float = 2.0):
    """(X~, robust covariance result): Z whitened by the covariance of the rows the filter keeps
    (eps = m/n, removal budget round(budget_factor m)), still centred at the mean of all rows."""
    n = z.shape[0]
    robust = robust_covariance(z, eps=m / n, tau=tau, c=c, max_removed=int(round(budget_factor * m)))
    return z @ inverse_sqrt(robust.covariance), robust


def spectre_scores_at_k(z_k: np.ndarray, m: int, alpha: float = DEFAULT_ALPHA, tau: float = 0.1, c: float = 10.0,
                        budget_factor: float = 2.0) -> tuple[np.ndarray, dict]:
    """QUE scores of one class's k-dimensional PCA projection (sections 1.2-1.3). k = 1 is the
    squared projection (a spectral signature): there is nothing to whiten against."""
    if z_k.shape[1] == 1 or m == 0:
        return z_k[:, 0] ** 2, {"filter": "none (k = 1)" if m else "none (m = 0)"}
    white, robust = whiten_robustly(z_k, m, tau, c, budget_factor)
    sigma_tilde = np.cov(white, rowvar=False)
    info = {"filter": robust.stopped, "filter_rounds": robust.rounds, "filter_removed": int((~robust.kept).sum())}
    return que_scores(white, alpha, sigma_tilde), info


def op_statistic(z: np.ndarray, kept: np.ndarray, alpha: float = DEFAULT_ALPHA) -> float:
    """op_k = tr(Sigma~ M) / tr(M), Sigma~ the covariance of Z whitened by the kept rows' covariance
    (all PCA dims): large when the removed rows carry variance the kept ones lack (section 1.4)."""
    sigma = np.cov(z[kept], rowvar=False)
    white = z @ inverse_sqrt(sigma)
    return que_op_statistic(np.cov(white, rowvar=False), alpha)


def spectre_class(r: np.ndarray, m: int, k: int | None = None, ks=SWEEP, max_k: int | None = MAX_K,
                  alpha: float = DEFAULT_ALPHA, tau: float = 0.1, c: float = 10.0, budget_factor: float = 2.0,
                  removal: float = REMOVAL_FACTOR) -> tuple[np.ndarray, np.ndarray, dict]:
    """SPECTRE on one class's representations r (n, d) with poison bound m.

    k fixed, or chosen from ks (capped at max_k, at sqrt(n/2) and at the PCA dimension) by the
    largest op_k.
    Returns (scores, removed mask of round(removal m) rows, details with the op_k sweep).
    """
    n, d = r.shape
    dims = min(PCA_DIMS, d, n - 1)
    if dims < 1:
        raise AdvlabError(f"SPECTRE needs at least 2 rows per class, got {n}")
    z = pca_scores(r, dims)
    if k is not None:
        if k < 1 or k > dims:
            raise AdvlabError(f"k must be in 1..{dims} (the PCA dimension for {n} rows of {d} features), got {k}")
        candidates = [int(k)]
    else:
        limit = min(dims, int(np.sqrt(n / 2)))
        limit = limit if max_k is None else min(limit, max_k)
        candidates = [int(kk) for kk in ks if kk <= limit] or [1]
    count = removal_count(m, removal, n)
    sweep = []
    best = None
    for kk in candidates:
        start = time.perf_counter()
        scores, info = spectre_scores_at_k(z[:, :kk], m, alpha, tau, c, budget_factor)
        removed = top_mask(scores, count)
        op = op_statistic(z, ~removed, alpha) if len(candidates) > 1 and removed.any() else float("nan")
        sweep.append({"k": kk, "op": op, "seconds": time.perf_counter() - start, **info})
        if best is None or op > best[0]:
            best = (op, kk, scores, removed)
    _, chosen, scores, removed = best
    return scores, removed, {"k": chosen, "pca_dims": dims, "sweep": sweep, "max_k": max_k}


def spectre(features, labels, poison_fraction: float | None = None, m: int | dict | None = None, classes=None,
            k: int | None = None, max_k: int | None = MAX_K, alpha: float = DEFAULT_ALPHA,
            removal: float = REMOVAL_FACTOR) -> Detection:
    """SPECTRE per scanned class; removes round(removal x m_y) rows of each (the reference's 1.5)."""
    x, y = check_inputs(features, labels)
    budgets = class_budgets(y, poison_fraction, m, classes)
    scores = np.zeros(len(y))
    removed = np.zeros(len(y), dtype=bool)
    per_class = {}
    for cls, m_c in budgets.items():
        rows = np.flatnonzero(y == cls)
        class_scores, class_removed, details = spectre_class(x[rows], m_c, k=k, max_k=max_k, alpha=alpha,
                                                             removal=removal)
        scores[rows] = class_scores
        removed[rows[class_removed]] = True
        per_class[cls] = {"n": len(rows), "m": m_c, "removed": int(class_removed.sum()), **details}
    return Detection(scores, removed, "spectre", per_class)
