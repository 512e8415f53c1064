"""Robust statistics on feature matrices: robust mean and covariance, QUE scores."""
