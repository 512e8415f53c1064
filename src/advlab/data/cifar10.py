"""CIFAR-10 from the canonical pickled batches or from an image-folder copy of it."""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch

from advlab.data.cache import cached_arrays, cached_fingerprint, source_key
from advlab.data.dataset import ImageDataset
from advlab.data.folder import read_image_folder
from advlab.data.paths import download, missing_files_error
from advlab.errors import AdvlabError

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickle only what CIFAR batches hold (dicts, lists, bytes and NumPy arrays): no code runs."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except Exception as exc:  # noqa: BLE001 - any failure here means a damaged or foreign file
        raise AdvlabError(f"{path} is not a readable CIFAR-10 batch ({exc}); replace it") from None
    if len(data) != len(labels):
        raise AdvlabError(f"{path} holds {len(data)} images but {len(labels)} labels")
    return data, labels


def _find(root: Path, split: str) -> tuple[str, Path] | None:
    for base in (root, root / "cifar10", root / "cifar-10"):
        if (base / split).is_dir() and any((base / split).iterdir()):
            return "folder", base / split
    for base in (root / "cifar-10-batches-py", root):
        if all((base / name).is_file() for name in BATCHES[split]):
            return "batches", base
    return None


def load_cifar10(split: str, root: Path) -> ImageDataset:
    """CIFAR-10 split from root: image folders (root[/cifar10]/split/class/*) or pickled batches
    (root[/cifar-10-batches-py]/data_batch_*); downloads the canonical archive when neither is there."""
    if split not in BATCHES:
        raise AdvlabError(f"unknown split {split!r}; choose train or test")
    found = _find(root, split)
    if found is None:
        try:
            archive = download(URL, root / "cifar-10-python.tar.gz", MD5)
            with tarfile.open(archive) as tar:
                tar.extractall(root, filter="data")
        except (OSError, tarfile.TarError) as exc:
            expected = ["cifar10/{train,test}/<class>/*.jpg", "cifar-10-batches-py/"]
            raise missing_files_error(f"CIFAR-10 {split} split", root, expected, str(exc)) from None
        found = _find(root, split)
        if found is None:
            raise AdvlabError(f"the downloaded CIFAR-10 archive in {root} has no {split} split")
    layout, path = found
    if layout == "folder":
        data = read_image_folder(path, size=32, channels=3, name=f"cifar10-{split}", classes=CLASSES,
                                 convert_mode="RGB")  # a fixed layout: no header scan
        data.meta.update({"dataset": "cifar10", "split": split, "source": str(path)})
        return data
    files = [path / name for name in BATCHES[split]]

    def build() -> dict[str, np.ndarray]:
        parts = [read_batch(f) for f in files]
        return {"images": np.concatenate([p[0] for p in parts]), "labels": np.concatenate([p[1] for p in parts])}

    key = source_key(files)
    arrays = cached_arrays(f"cifar10-{split}", key, build)
    data = ImageDataset(torch.from_numpy(arrays["images"]), torch.from_numpy(arrays["labels"]), CLASSES,
                        f"cifar10-{split}", {"dataset": "cifar10", "split": split, "source": str(path)})
    data.known_fingerprint = cached_fingerprint(f"cifar10-{split}", key, lambda: data.fingerprint)
    return data
