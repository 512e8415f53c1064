"""advlab: adversarial machine learning in PyTorch: attack, defend, certify, audit."""

__version__ = "0.1.0"
