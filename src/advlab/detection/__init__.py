"""Backdoor detection from representations: spectral signatures, SPECTRE, activation clustering.

Every detector is a function ``(features, labels, poison_fraction=... or m=...) -> Detection``
that unpacks as ``scores, removed``. Detectors know nothing of models or training;
:func:`extract_features` turns a model and images into the feature matrix they take.
"""

from advlab.detection.clustering import activation_clustering
from advlab.detection.common import REMOVAL_FACTOR, Detection, class_budgets
from advlab.detection.representations import PENULTIMATE, describe_layer, extract_features, layer_names
from advlab.detection.spectral import spectral_signatures
from advlab.detection.spectre import spectre, spectre_class

DETECTORS = {"spectre": spectre, "spectral": spectral_signatures, "clustering": activation_clustering}


def detect(method: str, features, labels, **options) -> Detection:
    """Run a detector by name (spectre, spectral, clustering)."""
    from advlab.errors import AdvlabError

    if method not in DETECTORS:
        raise AdvlabError(f"unknown detection method {method!r}; choose one of {', '.join(DETECTORS)}")
    return DETECTORS[method](features, labels, **options)


__all__ = ["DETECTORS", "PENULTIMATE", "REMOVAL_FACTOR", "Detection", "activation_clustering", "class_budgets",
           "describe_layer", "detect", "extract_features", "layer_names", "spectral_signatures", "spectre",
           "spectre_class"]
