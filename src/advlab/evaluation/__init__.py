"""Evaluation: clean accuracy, robust accuracy over eps lists, diagnostics, metrics."""

from advlab.evaluation.clean import CleanEvaluation, evaluate_clean

__all__ = ["CleanEvaluation", "evaluate_clean"]
