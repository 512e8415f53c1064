"""Where data lives: --data-dir, else ADVLAB_DATA, else the per-user cache; downloads with checksums."""

from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

from advlab.errors import AdvlabError
from advlab.runtime import atomic_write, cache_dir


def data_root(data_dir: str | Path | None = None) -> Path:
    """The folder data sets are looked for in, by precedence: argument, ADVLAB_DATA, cache.

    A folder that was named (the argument or ADVLAB_DATA) must exist and be a folder: a typo is an
    error, never a silent switch to other data."""
    if data_dir:
        return _existing_folder(Path(data_dir).expanduser(), "--data-dir")
    if os.environ.get("ADVLAB_DATA"):
        return _existing_folder(Path(os.environ["ADVLAB_DATA"]).expanduser(), "ADVLAB_DATA")
    return cache_dir() / "data"


def _existing_folder(path: Path, name: str) -> Path:
    if not path.exists():
        raise AdvlabError(f"{name} {path} does not exist; give the folder that holds the data sets")
    if not path.is_dir():
        raise AdvlabError(f"{name} {path} is a file, not a folder; give the folder that holds the data sets")
    return path


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: Path, md5: str, timeout: float = 30.0) -> Path:
    """Fetch url into dest, verify its MD5, and only then put it in place.

    Downloads are off when ADVLAB_NO_DOWNLOAD is set (tests set it: nothing downloads there).
    """
    if os.environ.get("ADVLAB_NO_DOWNLOAD"):
        raise OSError("downloads are disabled (ADVLAB_NO_DOWNLOAD is set)")

    def fetch(tmp: Path) -> None:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
            while block := response.read(1 << 20):
                out.write(block)
        got = md5sum(tmp)
        if got != md5:
            raise AdvlabError(f"download of {url} is corrupt (md5 {got}, expected {md5}); try again")

    return atomic_write(dest, fetch)


def missing_files_error(what: str, folder: Path, expected: list[str], reason: str) -> AdvlabError:
    return AdvlabError(
        f"{what} not found in {folder} (expected {', '.join(expected)}) and could not be downloaded "
        f"({reason}); put the files there or pass --data-dir / set ADVLAB_DATA"
    )
