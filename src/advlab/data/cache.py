"""Decoded arrays cached on disk, keyed by where they came from, so a second load is instant."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from advlab.runtime import atomic_write, cache_dir


def source_key(*paths: Path) -> str:
    """A key that changes when any source file (or folder listing) changes."""
    digest = hashlib.sha1()
    for path in paths:
        stat = path.stat()
        digest.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def cached_arrays(name: str, key: str, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Load arrays from the cache, or build and store them. A damaged cache file is rebuilt."""
    path = cache_dir() / "decoded" / f"{name}-{key}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except Exception:  # noqa: BLE001 - a damaged cache is rebuilt, never trusted
            path.unlink(missing_ok=True)
    arrays = build()
    try:
        atomic_write(path, lambda tmp: np.savez(open(tmp, "wb"), **arrays))
    except OSError:
        pass  # a read-only cache only costs speed
    return arrays
