"""Data sets as float [0, 1] NCHW batches with class names: MNIST, CIFAR-10, any image folder.

``load_dataset("mnist" | "cifar10" | "folder:PATH", split, data_dir=...)`` is the one entry point.
"""

from __future__ import annotations

from pathlib import Path

import torch

from advlab.data.cifar10 import load_cifar10
from advlab.data.dataset import ImageDataset
from advlab.data.folder import read_image_folder
from advlab.data.mnist import load_mnist
from advlab.data.paths import data_root
from advlab.errors import AdvlabError

DATASETS = ("mnist", "cifar10", "folder:PATH")
# fingerprints of the canonical data sets (the MNIST files shipped in the package, identical to the
# original distribution): the model cache leaves these out of its key, so keys made before the data
# entered them still name the same models
CANONICAL_FINGERPRINTS = {
    "mnist-train": "17c288015d682f13140f6b48c5763e12",
    "mnist-test": "773a667756a2d00f00fe20ab92912bdf",
}
SPLITS = ("train", "test")


def load_folder(root: Path, split: str, image_size: int = 32, channels: int = 3) -> ImageDataset:
    """A user's image folder: root/{train,test}/<class>/ if present, else root/<class>/ split
    80/20 by a fixed permutation (the same every time)."""
    if (root / "train").is_dir() and (root / "test").is_dir():
        return read_image_folder(root / split, image_size, channels, name=f"{root.name}-{split}")
    data = read_image_folder(root, image_size, channels, name=root.name)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    cut = int(round(0.8 * len(data)))
    part = data.subset(order[:cut] if split == "train" else order[cut:], name=f"{root.name}-{split}")
    part.meta["split"] = split
    return part


def load_dataset(name: str, split: str = "test", data_dir: str | Path | None = None,
                 image_size: int = 32, channels: int = 3) -> ImageDataset:
    """Load a data set split by name; data_dir overrides ADVLAB_DATA and the cache folder."""
    if split not in SPLITS:
        raise AdvlabError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if name == "mnist":  # the embedded copy stands in only when no folder was named on the command line
        return load_mnist(split, data_root(data_dir), required=bool(data_dir))
    if name == "cifar10":
        return load_cifar10(split, data_root(data_dir))
    if name.startswith("folder:"):
        return load_folder(Path(name[len("folder:"):]).expanduser(), split, image_size, channels)
    raise AdvlabError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def dataset_info(name: str) -> tuple[int, int, int, int]:
    """(channels, height, width, classes) of a named data set without loading it."""
    if name == "mnist":
        return 1, 28, 28, 10
    if name == "cifar10":
        return 3, 32, 32, 10
    raise AdvlabError(f"no fixed shape is known for dataset {name!r}")


__all__ = ["ImageDataset", "load_dataset", "load_mnist", "load_cifar10", "read_image_folder", "data_root",
           "dataset_info", "DATASETS", "CANONICAL_FINGERPRINTS"]
