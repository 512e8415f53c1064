"""Robust mean estimation by iterative filtering (Diakonikolas, Kamath, Kane, Li, Moitra, Stewart 2016).

Inliers are assumed roughly N(mu, I) (whiten first when the covariance is known); an eps fraction of
the rows may be arbitrary. Each round looks at the direction of largest variance: if it carries
more variance than Gaussian inliers plausibly would, the points whose projection has a heavier tail
than the Gaussian allows are removed. The naive mean errs by O(eps sqrt(d)) on such data, the
filtered one by O(eps sqrt(log 1/eps)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.special import ndtr

from advlab.errors import AdvlabError, check_range


@dataclass
class RobustMean:
    """The estimate, which rows it kept, and why it stopped."""

    mean: np.ndarray
    kept: np.ndarray  # bool mask over the input rows
    rounds: int
    stopped: str  # "spectral bound met", "no heavy tail", "budget spent", "max rounds"
    history: list[dict] = field(default_factory=list)


def as_matrix(x, name: str = "features", min_rows: int = 2) -> np.ndarray:
    """A finite float64 (n, d) matrix, or a user error saying what is wrong."""
    try:
        array = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise AdvlabError(f"{name} must be a numeric (n, d) matrix") from None
    if array.ndim != 2:
        raise AdvlabError(f"{name} must be a 2-D (n, d) matrix, got shape {array.shape}")
    if array.shape[0] < min_rows or array.shape[1] < 1:
        raise AdvlabError(f"{name} needs at least {min_rows} rows and 1 column, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise AdvlabError(f"{name} contain NaN or infinite values")
    return array


def spectral_threshold(eps: float, n: int, d: int) -> float:
    """gamma = eps ln(1/eps) + (1 + sqrt(d/n))^2 - 1: the top eigenvalue of the sample covariance of
    n Gaussian inliers in d dims exceeds 1 by about (1 + sqrt(d/n))^2 - 1, and eps corruption that
    moves the mean by no more than the optimal error adds eps ln(1/eps)."""
    return eps * math.log(1 / eps) + (1 + math.sqrt(d / n)) ** 2 - 1


def tail_threshold(projections: np.ndarray, factor: float = 3.0, t_min: float = 2.0) -> float | None:
    """The smallest t >= t_min where the share of |projections| >= t exceeds factor x the Gaussian
    two-sided tail 2 PhiBar(t); None if the tail is nowhere that heavy."""
    a = np.sort(projections)
    n = len(a)
    # The empirical tail only changes at observed values, so those (and t_min) are the candidates.
    candidates = np.concatenate([[t_min], a[a > t_min]])
    counts = n - np.searchsorted(a, candidates, side="left")  # #{a_i >= t}
    heavy = counts / n > factor * 2 * ndtr(-candidates)
    if not heavy.any():
        return None
    return float(candidates[np.argmax(heavy)])


def robust_mean(x, eps: float, max_removed: int | None = None, max_rounds: int = 100,
                tail_factor: float = 3.0) -> RobustMean:
    """Filtered mean of the rows of x under an eps fraction of corruption (iterative filtering, DKK17).

    Each round: mu, Sigma of the kept rows; (lambda, v) the top eigenpair of Sigma. Stop when
    lambda <= 1 + gamma (:func:`spectral_threshold`). Otherwise a_i = |v . (x_i - mu)|; remove
    every a_i >= t for the smallest t >= 2 whose empirical tail exceeds tail_factor x 2 PhiBar(t).
    Stops when no such t exists or max_removed (default 2 eps n) rows are gone; a round never
    removes more than what is left of the budget (it removes the largest a_i first).
    """
    x = as_matrix(x)
    eps = check_range(eps, "eps", 0.0, 0.5, lo_open=True)
    n, d = x.shape
    budget = int(round(2 * eps * n)) if max_removed is None else int(max_removed)
    kept = np.ones(n, dtype=bool)
    history: list[dict] = []
    stopped = "max rounds"
    for round_index in range(1, max_rounds + 1):
        rows = np.flatnonzero(kept)
        sub = x[rows]
        mu = sub.mean(0)
        centered = sub - mu
        sigma = centered.T @ centered / len(sub)
        values, vectors = np.linalg.eigh(sigma)
        lam, v = values[-1], vectors[:, -1]
        bound = 1 + spectral_threshold(eps, len(sub), d)
        if lam <= bound:
            stopped = "spectral bound met"
            break
        a = np.abs(centered @ v)
        t = tail_threshold(a, tail_factor)
        if t is None:
            stopped = "no heavy tail"
            break
        left = budget - (n - kept.sum())
        drop = np.flatnonzero(a >= t)
        if len(drop) > left:
            drop = np.argsort(-a)[:left]
        kept[rows[drop]] = False
        history.append({"round": round_index, "lambda": float(lam), "bound": float(bound), "t": t,
                        "removed": int(len(drop))})
        if len(drop) == 0 or budget - (n - kept.sum()) <= 0:
            stopped = "budget spent"
            break
    return RobustMean(x[kept].mean(0), kept, len(history), stopped, history)
