"""A folder of images, one subfolder per class, as a data set: root/<class>/*.png|jpg."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from advlab.data.cache import cached_arrays, cached_fingerprint, source_key
from advlab.data.dataset import ImageDataset
from advlab.errors import AdvlabError

MAX_IMAGE_SIZE = 1024  # 1024 x 1024 x 3 bytes per image already; beyond that a typo, not a data set
EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def _listing(root: Path, classes: list[str]) -> list[tuple[Path, int]]:
    files = []
    for index, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            raise AdvlabError(f"class folder {folder} is missing")
        files += [(p, index) for p in sorted(folder.iterdir()) if p.suffix.lower() in EXTENSIONS]
    return files


def read_image_folder(root: Path, size: int, channels: int = 3, name: str | None = None,
                      classes: list[str] | None = None) -> ImageDataset:
    """Decode every image under root/<class>/ resized to size x size (bilinear), cached on disk.

    Classes are the subfolders in alphabetical order unless given; images come in a fixed shuffled
    order. An undecodable file is a user error naming the file.
    """
    root = Path(root)
    if not root.is_dir():
        raise AdvlabError(f"image folder {root} {'is a file, not a folder' if root.exists() else 'does not exist'}")
    if int(size) != size or not 1 <= size <= MAX_IMAGE_SIZE:
        raise AdvlabError(f"image size must be an integer in 1..{MAX_IMAGE_SIZE}, got {size}")
    if classes is None:
        classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise AdvlabError(f"{root} has no class subfolders; expected {root}/<class>/*.png|jpg")
    files = _listing(root, classes)
    if not files:
        raise AdvlabError(f"{root} holds no images ({', '.join(sorted(EXTENSIONS))}) in its class folders")
    if channels not in (1, 3):
        raise AdvlabError(f"channels must be 1 or 3, got {channels}")

    def build() -> dict[str, np.ndarray]:
        images = np.empty((len(files), size, size, channels), dtype=np.uint8)
        for i, (path, _) in enumerate(files):
            try:
                with Image.open(path) as img:
                    img = img.convert("L" if channels == 1 else "RGB")
                    if img.size != (size, size):
                        img = img.resize((size, size), Image.BILINEAR)
                    images[i] = np.asarray(img).reshape(size, size, channels)
            except (UnidentifiedImageError, OSError, SyntaxError) as exc:
                raise AdvlabError(f"cannot decode image {path} ({exc}); remove or replace it") from None
        return {"images": images.transpose(0, 3, 1, 2).copy(), "labels": np.array([c for _, c in files])}

    # every file's name, size and modification time (and bytes, when small) and the class order
    key = source_key([p for p, _ in files], root) + "-" + hashlib.sha256(
        json.dumps([classes, [c for _, c in files], size, channels]).encode()).hexdigest()[:12]
    arrays = cached_arrays(f"folder-{root.name}", key, build)
    # Folders list images class by class; a fixed permutation makes "the first N images" a fair
    # sample of all classes (the same N images every time).
    order = torch.randperm(len(files), generator=torch.Generator().manual_seed(0))
    data = ImageDataset(torch.from_numpy(arrays["images"])[order], torch.from_numpy(arrays["labels"]).long()[order],
                        list(classes), name or root.name, {"dataset": f"folder:{root}", "source": str(root)})
    data.known_fingerprint = cached_fingerprint(f"folder-{root.name}", key, lambda: data.fingerprint)
    return data
