"""Robust covariance by the filter of Diakonikolas, Kamath, Kane, Li, Moitra, Stewart (2017).

The filter whitens the points by their second moment and asks whether the fourth moment looks
Gaussian. Along the top eigenvector of the centred fourth-moment operator T (a k^2 x k^2 matrix,
never formed: products with it cost O(n k^2) and scipy's Lanczos solver ``eigsh`` needs only
those), Gaussian inliers give an eigenvalue near 2; a larger one means some points inflate the
covariance in a direction, and the points with the heaviest tail along it are removed. This is
the robust covariance SPECTRE (Hayase et al. 2021) whitens with (Diakonikolas et al. 2017's filter);
the comments below name its steps (a)-(f).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

from advlab.errors import AdvlabError, check_range
from advlab.robust.mean import as_matrix

SHIFT = 3.0  # the threshold walk only considers deviations above this (the reference's shift)


@dataclass
class RobustCovariance:
    """Kept rows, the covariance and mean of the kept rows (divided by |K|), and the filter's log."""

    kept: np.ndarray
    covariance: np.ndarray
    mean: np.ndarray
    rounds: int
    stopped: str  # "fourth moment Gaussian", "no outliers above shift", "budget spent", "max rounds"
    history: list[dict] = field(default_factory=list)


def inverse_sqrt(sigma: np.ndarray, floor: float = 1e-10) -> np.ndarray:
    """Symmetric Sigma^{-1/2}, eigenvalues floored at floor x the largest (a rank-deficient Sigma,
    from dead units or fewer points than dimensions, stays finite)."""
    sigma = (sigma + sigma.T) / 2
    values, vectors = np.linalg.eigh(sigma)
    top = max(values[-1], np.finfo(float).tiny)
    values = np.maximum(values, floor * top)
    return (vectors / np.sqrt(values)) @ vectors.T


def fourth_moment_operator(y: np.ndarray) -> LinearOperator:
    """T = (1/n) sum_i vec(y_i y_i^T) vec(y_i y_i^T)^T - vec(I) vec(I)^T as a matrix-free operator:
    T w = vec((1/n) Y^T diag(y_i^T W y_i) Y) - tr(W) vec(I), W = reshape(w) (step (c))."""
    n, k = y.shape
    identity = np.eye(k).ravel()

    def matvec(w: np.ndarray) -> np.ndarray:
        w_matrix = np.asarray(w, dtype=np.float64).reshape(k, k)
        quad = np.einsum("ij,ij->i", y @ w_matrix, y)  # y_i^T W y_i for every i
        return ((y.T * quad) @ y / n).ravel() - np.trace(w_matrix) * identity

    return LinearOperator((k * k, k * k), matvec=matvec, rmatvec=matvec, dtype=np.float64)


def fourth_moment_top_eigenpair(y: np.ndarray) -> tuple[float, np.ndarray]:
    """Largest eigenvalue of T and its unit eigenvector (length k^2), by Lanczos (eigsh)."""
    n, k = y.shape
    if k == 1:  # T is the scalar E[y^4] - 1
        return float(np.mean(y[:, 0] ** 4) - 1.0), np.ones(1)
    operator = fourth_moment_operator(y)
    start = np.eye(k).ravel() + 1.0  # fixed start vector: the same input gives the same answer
    try:
        values, vectors = eigsh(operator, k=1, which="LA", v0=start, tol=1e-6, maxiter=5000)
    except ArpackNoConvergence as exc:  # take the best Ritz pair found so far
        if len(exc.eigenvalues) == 0:
            raise
        values, vectors = exc.eigenvalues, exc.eigenvectors
    return float(values[-1]), vectors[:, -1]


def covariance_tail(t: float, eps: float) -> float:
    """The tail bound of the threshold walk (step (e)): 1 up to 10 ln(1/eps), then 3 eps/(T ln T)^2."""
    if t <= 10 * math.log(1 / eps):
        return 1.0
    return 3 * eps / (t * math.log(t)) ** 2


def _remove_largest(scores: np.ndarray, flagged: np.ndarray, limit: int) -> np.ndarray:
    """Rows to remove: the flagged ones, or only the `limit` largest scores among them (step (f))."""
    rows = np.flatnonzero(flagged)
    if len(rows) > limit:
        rows = rows[np.argsort(-scores[rows], kind="stable")[:limit]]
    return rows


def covariance_filter_round(s: np.ndarray, eps: float, tau: float = 0.1, c: float = 10.0,
                            limit: int | None = None) -> tuple[str, np.ndarray, dict]:
    """One round of the filter on the rows of s (n x k). Returns (status, rows to remove, info) with
    status "continue" (rows found), "gaussian" (the stop test passed) or "no outliers"."""
    n, k = s.shape
    limit = n if limit is None else limit
    # (a) second moment, not re-centred (as the reference), and whitening by its inverse square root
    second = s.T @ s / n
    y = s @ inverse_sqrt(second)
    # (b) early filter: points far outside any plausible Gaussian shell
    norms = np.einsum("ij,ij->i", y, y)
    far = norms >= c * k * math.log(n / tau)
    if far.any():
        return "continue", _remove_largest(norms, far, limit), {"step": "early", "flagged": int(far.sum())}
    # (c) top eigenpair of the fourth-moment operator
    lam, v = fourth_moment_top_eigenpair(y)
    info = {"step": "fourth moment", "lambda": lam, "bound": 1 + c * eps * math.log(1 / eps) ** 2}
    # (d) Gaussian-looking fourth moment: done
    if lam <= info["bound"]:
        return "gaussian", np.empty(0, dtype=int), info
    # (e) scores along the eigenvector; walk the deviations upward to a threshold
    v_matrix = v.reshape(k, k)
    v_sym = (v_matrix + v_matrix.T) / 2
    p = (np.einsum("ij,ij->i", y @ v_sym, y) - np.trace(v_sym)) / math.sqrt(2)
    delta = np.abs(p - np.median(p))
    ordered = np.sort(delta)
    threshold = None
    for j in np.flatnonzero(ordered > SHIFT):
        t = ordered[j] - SHIFT
        if (j + 1) / n >= covariance_tail(t, eps):
            threshold = t
            break
    if threshold is None:
        return "no outliers", np.empty(0, dtype=int), info
    info["threshold"] = float(threshold)
    return "continue", _remove_largest(delta, delta > threshold, limit), info


def robust_covariance(s, eps: float, tau: float = 0.1, c: float = 10.0, max_removed: int | None = None,
                      max_rounds: int = 1000) -> RobustCovariance:
    """Run the covariance filter to completion (Diakonikolas et al. 2017).

    s: (n, k) points, already centred by the caller (SPECTRE centres at the mean of all points);
    eps: the corruption fraction m/n; max_removed: the removal budget (default round(2 eps n)).
    The returned covariance is that of the kept rows about their own mean, divided by |K|.
    """
    s = as_matrix(s, "points")
    eps = check_range(eps, "eps", 0.0, 0.5, lo_open=True)
    check_range(tau, "tau", 0.0, 1.0, lo_open=True)
    n = s.shape[0]
    budget = int(round(2 * eps * n)) if max_removed is None else int(max_removed)
    if budget < 0:
        raise AdvlabError(f"max_removed must be >= 0, got {budget}")
    rows = np.arange(n)
    history: list[dict] = []
    stopped = "max rounds"
    for _ in range(max_rounds):
        left = budget - (n - len(rows))
        if left <= 0:
            stopped = "budget spent"
            break
        status, drop, info = covariance_filter_round(s[rows], eps, tau, c, left)
        info["removed"] = int(len(drop))
        history.append(info)
        if status == "gaussian":
            stopped = "fourth moment Gaussian"
            break
        if status == "no outliers" or len(drop) == 0:
            stopped = "no outliers above shift"
            break
        rows = np.delete(rows, drop)
    kept = np.zeros(n, dtype=bool)
    kept[rows] = True
    mean = s[kept].mean(0)
    centered = s[kept] - mean
    covariance = centered.T @ centered / kept.sum()
    return RobustCovariance(kept, covariance, mean, len(history), stopped, history)
