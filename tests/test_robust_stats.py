"""Robust mean and covariance, the fourth-moment operator and QUE, against closed forms and the
planted-outlier oracles with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from advlab.errors import AdvlabError
from advlab.robust import (
    fourth_moment_operator,
    fourth_moment_top_eigenpair,
    inverse_sqrt,
    que_op_statistic,
    que_scores,
    que_weights,
    robust_covariance,
    robust_mean,
)
from advlab.robust.mean import tail_threshold


def corrupted_gaussian(seed: int, n: int = 5000, d: int = 100, eps: float = 0.1, shift: float = 4.0):
    """Section 5's oracle: inliers N(0, I), an eps fraction of outliers N(shift e_1, I)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    m = int(eps * n)
    x[:m, 0] += shift
    return x, m


@pytest.mark.parametrize("seed", [0, 1])
def test_robust_mean_error_near_inlier_mean_and_far_below_naive(seed):
    x, m = corrupted_gaussian(seed)
    result = robust_mean(x, eps=0.1)
    naive = np.linalg.norm(x.mean(0))
    inlier = np.linalg.norm(x[m:].mean(0))
    robust = np.linalg.norm(result.mean)
    # the notes: naive 0.41-0.44, one filter round 0.16-0.18, inlier-only 0.14
    assert 0.38 < naive < 0.47
    assert robust < 1.5 * inlier
    assert robust < 0.5 * naive
    # most outliers are gone, and the removal stayed within the 2 eps n budget
    assert (~result.kept[:m]).sum() > 0.9 * m
    assert (~result.kept).sum() <= 2 * m


def test_robust_mean_removes_nothing_on_clean_data():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5000, 100)) + 2.0
    result = robust_mean(x, eps=0.1)
    assert result.kept.all()
    assert result.stopped == "spectral bound met"
    np.testing.assert_allclose(result.mean, x.mean(0))


def test_robust_mean_respects_the_removal_budget():
    x, m = corrupted_gaussian(4, n=2000, d=20, eps=0.2, shift=6.0)
    result = robust_mean(x, eps=0.2, max_removed=50)
    assert (~result.kept).sum() == 50


def test_tail_threshold_finds_heavy_tail_only():
    rng = np.random.default_rng(0)
    gaussian = np.abs(rng.standard_normal(20000))
    assert tail_threshold(gaussian) is None
    heavy = np.concatenate([gaussian, np.full(2000, 5.0)])
    t = tail_threshold(heavy)
    assert t is not None and 2.0 <= t <= 5.0


def test_robust_mean_rejects_bad_input():
    with pytest.raises(AdvlabError, match="NaN"):
        robust_mean(np.array([[0.0, np.nan], [1.0, 2.0], [0.0, 1.0]]), eps=0.1)
    with pytest.raises(AdvlabError, match="eps"):
        robust_mean(np.zeros((10, 2)), eps=0.7)
    with pytest.raises(AdvlabError, match="2-D"):
        robust_mean(np.zeros(10), eps=0.1)


def test_fourth_moment_operator_matches_the_dense_matrix():
    rng = np.random.default_rng(0)
    y = rng.standard_normal((300, 4))
    k = y.shape[1]
    z = np.einsum("ni,nj->nij", y, y).reshape(len(y), k * k)
    dense = z.T @ z / len(y) - np.outer(np.eye(k).ravel(), np.eye(k).ravel())
    operator = fourth_moment_operator(y)
    for _ in range(3):
        w = rng.standard_normal(k * k)
        np.testing.assert_allclose(operator.matvec(w), dense @ w, rtol=1e-10, atol=1e-10)
    lam, v = fourth_moment_top_eigenpair(y)
    values, vectors = np.linalg.eigh(dense)
    assert lam == pytest.approx(values[-1], rel=1e-6)
    assert abs(v @ vectors[:, -1]) == pytest.approx(1.0, abs=1e-5)


def test_fourth_moment_of_whitened_gaussian_is_near_two():
    rng = np.random.default_rng(1)
    s = rng.standard_normal((40000, 3)) @ np.array([[2.0, 0, 0], [0.5, 1, 0], [0, 0.3, 0.5]])
    y = s @ inverse_sqrt(s.T @ s / len(s))
    lam, _ = fourth_moment_top_eigenpair(y)
    assert 1.8 < lam < 2.3


def test_inverse_sqrt_is_the_symmetric_inverse_root_and_survives_singular_input():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((5, 5))
    sigma = a @ a.T + np.eye(5)
    root = inverse_sqrt(sigma)
    np.testing.assert_allclose(root @ sigma @ root, np.eye(5), atol=1e-10)
    np.testing.assert_allclose(root, root.T)
    singular = np.diag([1.0, 0.0])
    assert np.isfinite(inverse_sqrt(singular)).all()


def test_robust_covariance_ignores_planted_outliers():
    rng = np.random.default_rng(5)
    true = np.diag([4.0, 1.0, 1.0, 0.25])
    clean = rng.multivariate_normal(np.zeros(4), true, 4000)
    outliers = rng.multivariate_normal(np.array([0, 0, 6.0, 0]), 0.1 * np.eye(4), 200)
    s = np.vstack([clean, outliers])
    s = s - s.mean(0)
    result = robust_covariance(s, eps=200 / 4200)
    assert (~result.kept[4000:]).sum() >= 190
    assert (~result.kept).sum() <= 400
    naive_error = np.linalg.norm(np.cov(s, rowvar=False) - true, 2)
    robust_error = np.linalg.norm(result.covariance - true, 2)
    assert robust_error < 0.25 and robust_error < naive_error / 4


def test_robust_covariance_removes_nothing_on_gaussian_data():
    rng = np.random.default_rng(6)
    s = rng.standard_normal((4000, 6)) * np.array([3, 2, 1, 1, 0.5, 0.5])
    result = robust_covariance(s - s.mean(0), eps=0.05)
    assert result.kept.all()
    assert result.stopped == "fourth moment Gaussian"


def test_que_weights_closed_forms():
    sigma = np.diag([3.0, 1.0, 1.0])
    m = que_weights(sigma, alpha=4.0)
    assert np.trace(m) == pytest.approx(1.0)
    w = np.exp(4.0 * (np.array([3.0, 1.0, 1.0]) - 1) / 2.0)
    np.testing.assert_allclose(np.diag(m), w / w.sum())
    # nothing stands out: M falls back to I/k instead of dividing by zero
    np.testing.assert_allclose(que_weights(np.eye(3)), np.eye(3) / 3)
    # alpha -> 0 is the Mahalanobis norm (M = I/k)
    np.testing.assert_allclose(que_weights(sigma, alpha=1e-9), np.eye(3) / 3, atol=1e-8)
    assert que_op_statistic(sigma) == pytest.approx(float(np.sum(np.array([3.0, 1, 1]) * w) / w.sum()))


def test_que_scores_rank_the_outlying_direction_first():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1000, 5))
    x[:20, 2] += 6
    scores = que_scores(x)
    assert set(np.argsort(-scores)[:20]) == set(range(20))
