"""An image folder read lazily: files are decoded batch by batch, in parallel worker processes.

`LazyImageFolder` has the interface commands use of `ImageDataset` (length, classes, shape, labels,
`batches()`, `head()`, `subset()`, `tensors()`, `describe()`, `fingerprint`) but holds only the list
of files and their labels: memory stays flat however many images the folder has. Each batch is
decoded by a torch DataLoader with worker processes (advlab.data.folder.decode_image, the same
transform as the in-memory reader, so both give the same pixels).

Its fingerprint hashes the files' bytes as they are streamed (not the decoded pixels, which would
mean decoding the whole folder once more), with the labels, the class names and the transform; it
is cached under the files' names, sizes and modification times.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from advlab.data.cache import cached_fingerprint, source_key
from advlab.data.dataset import ImageDataset
from advlab.data.folder import TRANSFORM, decode_image
from advlab.errors import AdvlabError

# A lazy data set asked for all its pixels at once (`.images`, e.g. an attack's whole --n selection)
# decodes them only up to this many bytes of uint8; beyond it the command must stream batches.
MATERIALIZE_LIMIT = 4 << 30


def default_workers() -> int:
    """Decoding processes: the CPUs this process may use, at most 8 (beyond that the disk or the
    model is the bottleneck, not decoding)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


class _Decoded(torch.utils.data.Dataset):
    """What the DataLoader's workers index: file i decoded to uint8 (C, S, S) with its label.
    Plain attributes only, so it pickles under any multiprocessing start method."""

    def __init__(self, files: list[str], labels: np.ndarray, size: int, channels: int) -> None:
        self.files, self.labels, self.size, self.channels = files, labels, size, channels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, int, str | None]:
        # a file that cannot be decoded comes back as its message: raised in a worker, the error would
        # reach the main process wrapped in the worker's traceback, not as one line
        try:
            return torch.from_numpy(decode_image(self.files[i], self.size, self.channels)), int(self.labels[i]), None
        except AdvlabError as exc:
            return None, int(self.labels[i]), str(exc)


def _collate(items: list[tuple[torch.Tensor | None, int, str | None]]) -> tuple:
    errors = [e for _, _, e in items if e is not None]
    if errors:
        return None, None, errors[0]
    return torch.stack([x for x, _, _ in items]), torch.tensor([y for _, y, _ in items], dtype=torch.long), None


class LazyImageFolder:
    """A folder data set that decodes images only when a batch asks for them (see the module)."""

    def __init__(self, files: list[str], labels: torch.Tensor, classes: list[str], size: int, channels: int,
                 name: str, meta: dict | None = None, root: Path | None = None, workers: int | None = None,
                 known_fingerprint: str | None = None) -> None:
        if len(files) != len(labels):
            raise AdvlabError(f"{name}: {len(files)} files but {len(labels)} labels")
        self.files = [str(f) for f in files]
        self.labels = torch.as_tensor(labels).long()
        self.classes = list(classes)
        self.size, self.channels = int(size), int(channels)
        self.name = name
        self.meta = dict(meta or {})
        self.root = Path(root) if root is not None else None
        self.workers = default_workers() if workers is None else int(workers)
        self.known_fingerprint = known_fingerprint
        self._images: torch.Tensor | None = None

    # -- the ImageDataset interface ----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.files)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.size, self.size)

    @property
    def fingerprint(self) -> str:
        """A hash of the files' bytes (streamed), labels, class names and transform (32 hex digits),
        cached under the files' names, sizes and modification times."""
        if self.known_fingerprint is None:
            if self.root is not None:
                key = source_key([Path(f) for f in self.files], self.root) + "-" + hashlib.sha256(
                    json.dumps([self.classes, self.labels.tolist(), self.size, self.channels]).encode()
                ).hexdigest()[:12]
                self.known_fingerprint = cached_fingerprint(f"lazy-{self.root.name}", key, self._stream_fingerprint)
            else:
                self.known_fingerprint = self._stream_fingerprint()
        return self.known_fingerprint

    def _stream_fingerprint(self) -> str:
        digest = hashlib.blake2b(digest_size=16)
        digest.update(json.dumps({"kind": "image files", "shape": [len(self), *self.shape], "classes": self.classes,
                                  "transform": TRANSFORM}).encode())
        for path in self.files:
            try:
                with open(path, "rb") as handle:
                    digest.update(f"{os.fstat(handle.fileno()).st_size}|".encode())
                    while chunk := handle.read(1 << 20):
                        digest.update(chunk)
            except OSError as exc:
                raise AdvlabError(f"cannot read image {path} ({exc.strerror or exc}); remove or replace it") from None
        digest.update(self.labels.numpy().astype("<i8").tobytes())
        return digest.hexdigest()

    def describe(self) -> dict:
        return {"name": self.name, "images": len(self), "shape": list(self.shape), "classes": self.num_classes,
                "source": str(self.meta.get("source", self.root or "files")), "fingerprint": self.fingerprint,
                "read": "lazily"}

    def uint8_batches(self, index_batches: Iterable[list[int]], workers: int | None = None,
                      pin_memory: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(uint8 images, labels) for each list of row indices, decoded by `workers` processes
        (0: in this process) a few batches ahead of the consumer."""
        workers = self.workers if workers is None else workers
        index_batches = [list(map(int, b)) for b in index_batches]
        if self._images is not None:  # already decoded (a small selection asked for as a whole)
            for rows in index_batches:
                yield self._images[rows], self.labels[rows]
            return
        workers = min(workers, len(index_batches))
        loader = torch.utils.data.DataLoader(
            _Decoded(self.files, self.labels.numpy(), self.size, self.channels), batch_sampler=index_batches,
            num_workers=workers, collate_fn=_collate, pin_memory=pin_memory, prefetch_factor=2 if workers else None)
        for x, y, error in loader:
            if error is not None:
                raise AdvlabError(error)
            yield x, y

    def batches(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(x, y) float [0, 1] batches on device, decoded in parallel as they are consumed."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        device = torch.device(device)
        rows = [order[i:i + batch_size].tolist() for i in range(0, n, batch_size)]
        for x, y in self.uint8_batches(rows, pin_memory=device.type == "cuda"):
            yield x.to(device, non_blocking=True).float().div_(255), y.to(device, non_blocking=True)

    def __getitem__(self, index) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(index, int):
            x, y = self.subset([index])[:]
            return x[0], y[0]
        part = self.subset(index)
        return part.images.float().div_(255), part.labels

    def subset(self, indices, name: str | None = None) -> LazyImageFolder:
        rows = torch.arange(len(self))[indices].reshape(-1).tolist()
        part = LazyImageFolder([self.files[i] for i in rows], self.labels[rows], self.classes, self.size,
                               self.channels, name or self.name, self.meta, self.root, self.workers)
        if self._images is not None:
            part._images = self._images[rows]
        return part

    def head(self, n: int | None) -> LazyImageFolder:
        return self if n is None or n >= len(self) else self.subset(slice(0, n))

    def tensors(self, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(n)[:]

    def class_index(self, name_or_index: str | int) -> int:
        return ImageDataset.class_index(self, name_or_index)  # type: ignore[arg-type]

    @property
    def images(self) -> torch.Tensor:
        """All the images decoded at once (uint8 NCHW): for the modest selections commands attack or
        certify; refused beyond MATERIALIZE_LIMIT bytes, where the work must stream batches."""
        if self._images is None:
            need = len(self) * self.channels * self.size * self.size
            if need > MATERIALIZE_LIMIT:
                raise AdvlabError(f"{self.name}: {len(self)} images of {'x'.join(map(str, self.shape))} would take "
                                  f"{need / 2**30:.1f} GiB decoded at once; choose fewer images (e.g. --n)")
            parts = [x for x, _ in self.uint8_batches([r.tolist() for r in torch.arange(len(self)).split(256)])]
            self._images = torch.cat(parts) if parts else torch.empty((0, *self.shape), dtype=torch.uint8)
        return self._images

    def materialize(self) -> ImageDataset:
        """The same data in memory (an ImageDataset), e.g. to train on a folder that fits."""
        return ImageDataset(self.images, self.labels, self.classes, self.name, dict(self.meta),
                            files=list(self.files))
