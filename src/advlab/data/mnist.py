"""MNIST from the canonical IDX files (gzip or raw); a copy ships inside the package."""

from __future__ import annotations

import gzip
import struct
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from advlab.data.cache import cached_arrays, cached_fingerprint, source_key
from advlab.data.dataset import ImageDataset
from advlab.errors import AdvlabError

CLASSES = [str(d) for d in range(10)]
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049


def embedded_dir() -> Path:
    """The MNIST files shipped in the package (CC BY-SA 3.0, Yann LeCun and Corinna Cortes)."""
    return Path(str(resources.files("advlab.data") / "embedded" / "mnist"))


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse one IDX file, refusing truncated or foreign files with a message naming the file."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise AdvlabError(f"{path} is corrupt or truncated ({exc}); replace it with a fresh copy") from None
    if len(raw) < 8:
        raise AdvlabError(f"{path} is too short to be an IDX file; replace it with a fresh copy")
    got, count = struct.unpack(">II", raw[:8])
    if got != magic:
        raise AdvlabError(f"{path} has magic number {got}, expected {magic}: not an MNIST "
                          f"{'image' if magic == IMAGE_MAGIC else 'label'} file")
    dims = [count]
    offset = 8
    if magic == IMAGE_MAGIC:
        dims += list(struct.unpack(">II", raw[8:16]))
        offset = 16
    expected = offset + int(np.prod(dims))
    if len(raw) != expected:
        raise AdvlabError(f"{path} holds {len(raw)} bytes, expected {expected}: truncated or corrupt")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def find_file(folders: list[Path], stem: str) -> Path | None:
    for folder in folders:
        for name in (stem + ".gz", stem):
            if (folder / name).is_file():
                return folder / name
    return None


def load_mnist(split: str = "test", root: Path | None = None, required: bool = False) -> ImageDataset:
    """MNIST train or test split: files under root (root, root/mnist, root/MNIST/raw), else the copy
    embedded in the package. required: root was named by the user (--data-dir), so MNIST missing
    there is an error instead of a silent fall-back to the embedded copy."""
    if split not in FILES:
        raise AdvlabError(f"unknown split {split!r}; choose train or test")
    folders = [root, root / "mnist", root / "MNIST" / "raw"] if root is not None else []
    image_path, label_path = (find_file(folders, stem) for stem in FILES[split])
    source = "user files"
    if image_path is None or label_path is None:
        if required:
            expected = " and ".join(f"{stem}[.gz]" for stem in FILES[split])
            raise AdvlabError(f"MNIST {split} files not found in {root} (looked in {root}, {root / 'mnist'} and "
                              f"{root / 'MNIST' / 'raw'} for {expected}); fix --data-dir, or leave it out to use "
                              "the copy inside the package")
        folder = embedded_dir()
        image_path, label_path = (find_file([folder], stem) for stem in FILES[split])
        source = "embedded"
        if image_path is None or label_path is None:
            raise AdvlabError(f"MNIST {split} files are missing from the package ({folder}); reinstall advlab")

    def build() -> dict[str, np.ndarray]:
        images = read_idx(image_path, IMAGE_MAGIC)
        labels = read_idx(label_path, LABEL_MAGIC)
        if len(images) != len(labels):
            raise AdvlabError(f"{image_path} has {len(images)} images but {label_path} has {len(labels)} labels")
        return {"images": images[:, None].copy(), "labels": labels.astype(np.int64)}

    key = source_key([image_path, label_path])
    arrays = cached_arrays(f"mnist-{split}", key, build)
    data = ImageDataset(torch.from_numpy(arrays["images"]), torch.from_numpy(arrays["labels"]), CLASSES,
                        f"mnist-{split}", {"dataset": "mnist", "split": split,
                                           "source": "embedded" if source == "embedded" else str(image_path.parent),
                                           "files": [str(image_path), str(label_path)]})
    data.known_fingerprint = cached_fingerprint(f"mnist-{split}", key, lambda: data.fingerprint)
    return data
