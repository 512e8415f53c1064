"""Data sets as float [0, 1] NCHW batches with class names: MNIST, CIFAR-10, any image folder.

``load_dataset("mnist" | "cifar10" | "folder:PATH", split, data_dir=...)`` is the one entry point.
"""

from __future__ import annotations

from pathlib import Path

import torch

from advlab.data.cifar10 import load_cifar10
from advlab.data.dataset import ImageDataset
from advlab.data.folder import list_folder, load_class_map, read_image_folder
from advlab.data.lazy import LazyImageFolder
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


# a folder whose decoded images would take more than this is read lazily (advlab.data.lazy) unless
# the caller says otherwise; below it, decoding once into memory (and a disk cache) is faster
IN_MEMORY_BYTES = 256 << 20


def load_image_folder(root: str | Path, image_size: int | None = None, channels: int | None = None,
                      class_map: dict[str, int] | None = None, lazy: bool | None = None, workers: int | None = None,
                      name: str | None = None, classes: list[str] | None = None,
                      convert_mode: str | None = None) -> ImageDataset | LazyImageFolder:
    """Every image of root/<class>/ as one data set (no split), in a fixed shuffled order.

    image_size and channels default to the images' own (one side shared by all; 1 channel when all
    are grayscale). lazy: True streams from disk (LazyImageFolder), False decodes into memory, None
    chooses by the decoded size (IN_MEMORY_BYTES). classes: the class folders in label order (all
    must exist), as an alternative to a class_map. The images must share one mode (their headers are
    read first) unless convert_mode ("RGB" or "L") converts them all."""
    root = Path(root)
    files, class_names, size, channels = list_folder(root, image_size, channels, class_map, classes, convert_mode)
    if lazy is None:
        lazy = len(files) * channels * size * size > IN_MEMORY_BYTES
    if not lazy:
        # the modes were checked above: read_image_folder need not read the headers again
        return read_image_folder(root, size, channels, name=name or root.name, class_map=class_map,
                                 classes=None if class_map else class_names,
                                 convert_mode="L" if channels == 1 else "RGB")
    order = torch.randperm(len(files), generator=torch.Generator().manual_seed(0)).tolist()
    meta = {"dataset": f"folder:{root}", "source": str(root), **({"class_map": class_map} if class_map else {})}
    return LazyImageFolder([str(files[i][0]) for i in order], torch.tensor([files[i][1] for i in order]),
                           class_names, size, channels, name or root.name, meta, root=root, workers=workers)


def load_folder(root: Path, split: str, image_size: int | None = None, channels: int | None = None,
                class_map: dict[str, int] | None = None, lazy: bool | None = None,
                workers: int | None = None, convert_mode: str | None = None) -> ImageDataset | LazyImageFolder:
    """A user's image folder: root/{train,test}/<class>/ if present, else root/<class>/ split
    80/20 by a fixed permutation (the same every time). Options as load_image_folder's."""
    root = Path(root)
    if (root / "train").is_dir() and (root / "test").is_dir():
        return load_image_folder(root / split, image_size, channels, class_map, lazy, workers,
                                 name=f"{root.name}-{split}", convert_mode=convert_mode)
    data = load_image_folder(root, image_size, channels, class_map, lazy, workers, convert_mode=convert_mode)
    cut = int(round(0.8 * len(data)))
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    part = data.subset(order[:cut] if split == "train" else order[cut:], name=f"{root.name}-{split}")
    part.meta["split"] = split
    return part


def load_dataset(name: str, split: str = "test", data_dir: str | Path | None = None,
                 image_size: int | None = None, channels: int | None = None,
                 class_map: dict[str, int] | str | Path | None = None, lazy: bool | None = None,
                 workers: int | None = None, convert_mode: str | None = None) -> ImageDataset | LazyImageFolder:
    """Load a data set split by name; data_dir overrides ADVLAB_DATA and the cache folder. The
    other options concern folder:PATH data sets (class_map: a dict or a file, see load_class_map;
    convert_mode: "RGB" or "L" to convert a folder of mixed image modes, which is otherwise refused)."""
    if split not in SPLITS:
        raise AdvlabError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if not name.startswith("folder:") and class_map is not None:
        raise AdvlabError(f"--class-map applies to folder:PATH data sets, not {name}")
    if not name.startswith("folder:") and convert_mode is not None:
        raise AdvlabError(f"--convert-mode applies to folder:PATH data sets, not {name}")
    if name == "mnist":  # the embedded copy stands in only when no folder was named on the command line
        return load_mnist(split, data_root(data_dir), required=bool(data_dir))
    if name == "cifar10":
        return load_cifar10(split, data_root(data_dir))
    if name.startswith("folder:"):
        if class_map is not None and not isinstance(class_map, dict):
            class_map = load_class_map(class_map)
        return load_folder(Path(name[len("folder:"):]).expanduser(), split, image_size, channels, class_map, lazy,
                           workers, convert_mode)
    raise AdvlabError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def check_classes_fit(data, num_classes: int, source: str) -> None:
    """Refuse data whose labels a model with num_classes outputs cannot have: with a class map, the
    folder mapped beyond the model's outputs is named; without one, the counts must match."""
    class_map = data.meta.get("class_map")
    if class_map:
        beyond = sorted((name for name, index in class_map.items() if index >= num_classes), key=class_map.get)
        if beyond:
            raise AdvlabError(f"folder class(es) {', '.join(beyond[:5])} map to indices the model lacks ({source} "
                              f"predicts {num_classes} classes, 0..{num_classes - 1}); fix --class-map")
        # the model's other outputs become classes without images, so predictions index data.classes
        data.classes = list(data.classes) + [f"class_{i}" for i in range(len(data.classes), num_classes)]
        return
    if num_classes != data.num_classes:
        hint = "; map the folders to the model's classes with --class-map" if data.meta.get("dataset", "").startswith(
            "folder:") else ""
        raise AdvlabError(f"{source} predicts {num_classes} classes but {data.name} has {data.num_classes}{hint}")


def dataset_info(name: str) -> tuple[int, int, int, int]:
    """(channels, height, width, classes) of a named data set without loading it."""
    if name == "mnist":
        return 1, 28, 28, 10
    if name == "cifar10":
        return 3, 32, 32, 10
    raise AdvlabError(f"no fixed shape is known for dataset {name!r}")


__all__ = ["check_classes_fit", "load_image_folder", "ImageDataset", "LazyImageFolder", "load_class_map",
           "IN_MEMORY_BYTES",
           "load_dataset", "load_mnist", "load_cifar10", "read_image_folder", "data_root",
           "dataset_info", "DATASETS", "CANONICAL_FINGERPRINTS"]
