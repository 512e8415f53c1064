"""Decoded arrays cached on disk, keyed by what they were decoded from, so a second load is instant.

The key of a source covers every file read: its path, size and modification time, and its bytes
when the files are small enough to hash on every load (SMALL_SOURCE_BYTES). A data set's identity
(its fingerprint, a hash of the decoded images, labels and class names) is cached next to the
arrays under the same key, so the model cache can key on the data at no cost after the first load.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from advlab.runtime import atomic_write, cache_dir

# sources up to this size are also hashed byte by byte at every load (a content check that costs
# milliseconds); larger ones are trusted by path, size and modification time
SMALL_SOURCE_BYTES = 16 << 20


def source_key(files: Iterable[Path], root: Path | None = None) -> str:
    """A key that changes when any source file changes: its name (relative to root), size and
    modification time, and its bytes when all the files together are small."""
    files = list(files)
    digest = hashlib.sha256()
    total = 0
    for path in files:
        stat = path.stat()
        total += stat.st_size
        name = path.relative_to(root).as_posix() if root is not None else str(path.resolve())
        digest.update(f"{name}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    if root is not None:
        digest.update(f"root|{root.resolve()}\n".encode())
    if total <= SMALL_SOURCE_BYTES:
        for path in files:
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:20]


def _decoded_path(name: str, key: str, suffix: str) -> Path:
    return cache_dir() / "decoded" / f"{name}-{key}{suffix}"


def cached_arrays(name: str, key: str, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Load arrays from the cache, or build and store them. A damaged cache file is rebuilt."""
    path = _decoded_path(name, key, ".npz")
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


def cached_fingerprint(name: str, key: str, compute: Callable[[], str]) -> str:
    """The fingerprint of the data set decoded under (name, key), computed once and stored beside it."""
    path = _decoded_path(name, key, ".fingerprint")
    try:
        text = path.read_text().strip()
        if len(text) == 32 and all(c in "0123456789abcdef" for c in text):
            return text
    except OSError:
        pass
    value = compute()
    try:
        atomic_write(path, lambda tmp: tmp.write_text(value + "\n"))
    except OSError:
        pass
    return value
