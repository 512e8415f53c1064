"""Quantum entropy (QUE) scores (Dong, Hopkins and Li 2019), as SPECTRE uses them (Hayase et al. 2021).

After whitening with a robust covariance, clean points look isotropic while poisons stick out in a
few directions. QUE weighs every direction by exp(alpha (lambda_j - 1) / (lambda_max - 1)) of the
whitened covariance's eigenvalues, so one score sees all the inflated directions at once:
alpha -> 0 gives the Mahalanobis norm, alpha -> infinity the whitened top-direction projection.
"""

from __future__ import annotations

import numpy as np

from advlab.robust.mean import as_matrix

DEFAULT_ALPHA = 4.0


def que_weights(sigma_tilde: np.ndarray, alpha: float = DEFAULT_ALPHA) -> np.ndarray:
    """M = exp(alpha (Sigma~ - I) / (||Sigma~||_2 - 1)) / trace, by eigendecomposition.

    When nothing stands out (||Sigma~||_2 - 1 near or below 0, e.g. nothing was removed) the
    exponent is undefined and M falls back to I/k (Dong, Hopkins & Li 2019).
    """
    sigma_tilde = (sigma_tilde + sigma_tilde.T) / 2
    k = sigma_tilde.shape[0]
    values, vectors = np.linalg.eigh(sigma_tilde)
    spread = values[-1] - 1.0
    if not np.isfinite(spread) or spread <= 1e-8:
        return np.eye(k) / k
    exponent = alpha * (values - 1.0) / spread
    weights = np.exp(exponent - exponent.max())  # shifted for overflow safety; normalized below
    weights /= weights.sum()
    return (vectors * weights) @ vectors.T


def que_scores(x_white, alpha: float = DEFAULT_ALPHA, sigma_tilde: np.ndarray | None = None) -> np.ndarray:
    """s_i = x_i^T M x_i for whitened points x (rows), M from their covariance (or sigma_tilde)."""
    x = as_matrix(x_white, "whitened points")
    if sigma_tilde is None:
        sigma_tilde = np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])
    m = que_weights(sigma_tilde, alpha)
    return np.einsum("ij,jk,ik->i", x, m, x)


def que_op_statistic(sigma_tilde: np.ndarray, alpha: float = DEFAULT_ALPHA) -> float:
    """tr(Sigma~ M) / tr(M): SPECTRE's criterion for choosing k (section 1.4)."""
    m = que_weights(sigma_tilde, alpha)
    return float(np.trace(sigma_tilde @ m) / np.trace(m))
