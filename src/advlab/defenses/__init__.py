"""Defenses: training recipes (augmentation, distillation, adversarial, noise) and smoothing."""
