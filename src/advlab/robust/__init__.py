"""Robust statistics on feature matrices: robust mean and covariance, QUE scores.

Pure NumPy/SciPy on (n, d) matrices; nothing here knows about models or training.
"""

from advlab.robust.covariance import (
    RobustCovariance,
    fourth_moment_operator,
    fourth_moment_top_eigenpair,
    inverse_sqrt,
    robust_covariance,
)
from advlab.robust.mean import RobustMean, robust_mean
from advlab.robust.que import que_op_statistic, que_scores, que_weights

__all__ = ["RobustCovariance", "RobustMean", "fourth_moment_operator", "fourth_moment_top_eigenpair",
           "inverse_sqrt", "que_op_statistic", "que_scores", "que_weights", "robust_covariance", "robust_mean"]
