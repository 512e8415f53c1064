"""The one in-memory data set shape: uint8 NCHW storage, float [0, 1] batches out."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from advlab.errors import AdvlabError


@dataclass
class ImageDataset:
    """Images stored as uint8 (N, C, H, W) with int64 labels and the names of the classes.

    Storage stays uint8 (4x smaller than float); indexing and batches give float32 in [0, 1].
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str = "dataset"
    meta: dict = field(default_factory=dict)
    # a loader that knows the fingerprint (cached beside the decoded arrays) sets it; else computed once
    known_fingerprint: str | None = field(default=None, repr=False, compare=False)
    # the file each image was decoded from (image folders), so findings can name files
    files: list[str] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise AdvlabError(f"{self.name}: images must be uint8 (N, C, H, W), got {self.images.dtype} "
                              f"{tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise AdvlabError(f"{self.name}: {self.images.shape[0]} images but {tuple(self.labels.shape)} labels")
        self.labels = self.labels.long()

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    @property
    def fingerprint(self) -> str:
        """The identity of the data: a hash of the images, labels and class names (32 hex digits).

        Two data sets with the same fingerprint hold the same images in the same order with the
        same labels, wherever they were read from; the model cache keys on it."""
        if self.known_fingerprint is None:
            digest = hashlib.blake2b(digest_size=16)
            digest.update(json.dumps({"shape": list(self.images.shape), "classes": list(self.classes)}).encode())
            digest.update(self.images.contiguous().numpy().tobytes())
            digest.update(self.labels.contiguous().numpy().astype("<i8").tobytes())
            self.known_fingerprint = digest.hexdigest()
        return self.known_fingerprint

    def describe(self) -> dict:
        """What a run records about the data it used: name, size, shape, source and fingerprint."""
        return {"name": self.name, "images": len(self), "shape": list(self.shape), "classes": self.num_classes,
                "source": str(self.meta.get("source", "memory")), "fingerprint": self.fingerprint}

    def __getitem__(self, index) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index].float().div_(255), self.labels[index]

    def subset(self, indices: torch.Tensor | slice | list[int], name: str | None = None) -> ImageDataset:
        files = None
        if self.files is not None:
            files = [self.files[i] for i in torch.arange(len(self))[indices].tolist()]
        return ImageDataset(self.images[indices], self.labels[indices], self.classes,
                            name or self.name, dict(self.meta), files=files)

    def head(self, n: int | None) -> ImageDataset:
        """The first n images (all when n is None); test sets keep their canonical order."""
        return self if n is None or n >= len(self) else self.subset(slice(0, n))

    def batches(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (x, y) float batches on device; shuffled by generator when asked."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else None
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size] if order is not None else slice(start, start + batch_size)
            x = self.images[idx].to(device, non_blocking=True).float().div_(255)
            yield x, self.labels[idx].to(device, non_blocking=True)

    def tensors(self, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """All (or the first n) images as one float batch and their labels."""
        return self.head(n)[:]

    def class_index(self, name_or_index: str | int) -> int:
        """Map a class name (or its index, as int or string) to its index."""
        if isinstance(name_or_index, int) or str(name_or_index).isdigit():
            index = int(name_or_index)
            if 0 <= index < self.num_classes:
                return index
        elif name_or_index in self.classes:
            return self.classes.index(name_or_index)
        raise AdvlabError(f"unknown class {name_or_index!r} for {self.name}; choose one of "
                          f"{', '.join(self.classes)} or 0..{self.num_classes - 1}")
