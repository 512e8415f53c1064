"""Detection on representations saved as .npy files (what `advlab detect` reads): safe loading, and
the scores and removed rows as a JSON-ready payload."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from advlab.detection import detect
from advlab.errors import AdvlabError


def load_npy(path: str, what: str) -> np.ndarray:
    """np.load without pickles; any unreadable file is a one-line user error."""
    if not Path(path).is_file():
        raise AdvlabError(f"{what} file {path} does not exist")
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":
            raise AdvlabError(f"{path} is not a .npy file (no NumPy header); write the {what} with numpy.save")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc):
            raise AdvlabError(f"{path} holds Python objects, which are never unpickled; save a numeric array") from None
        raise AdvlabError(f"{path} is not a readable .npy array ({str(exc).splitlines()[0][:120]})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise AdvlabError(f"{path} is not a readable .npy array ({str(exc).splitlines()[0][:120]})") from None


def detect_files(method: str, features_path: str, labels_path: str, poison_fraction: float | None = None,
                 m: int | None = None, classes: list[int] | None = None, k: int | None = None,
                 max_k: int | None = None) -> dict:
    """Run detector `method` on the (n, d) feature matrix and (n,) labels saved at the two paths.

    Returns the payload `advlab detect` writes: the score of every row, the rows to remove, and each
    scanned class's details (SPECTRE's k, clustering's silhouette)."""
    if poison_fraction is None and m is None and method != "clustering":
        raise AdvlabError(f"--method {method} needs --poison-fraction or --m (the assumed number of poisons)")
    features = load_npy(features_path, "features")
    labels = load_npy(labels_path, "labels")
    if features.dtype.kind not in "fiu":
        raise AdvlabError(f"{features_path} must hold numbers, got dtype {features.dtype}")
    options: dict = {"poison_fraction": poison_fraction, "m": m, "classes": classes}
    if method == "spectre":
        options.update(k=k, max_k=max_k)
    result = detect(method, features, labels, **options)
    return {"method": method, "features": features_path, "n": int(len(result.scores)),
            "poison_fraction": poison_fraction, "m": m, "removed_count": int(result.removed.sum()),
            "removed": np.flatnonzero(result.removed).tolist(), "scores": result.scores.tolist(),
            "per_class": {str(c): v for c, v in result.per_class.items()}}
