"""A folder of images, one subfolder per class, as a data set: root/<class>/*.png|jpg.

Every image goes through one transform, the evaluation transform of timm (and of most ImageNet
code): the shorter side is resized (bicubic) to floor(size / 0.875), then the centre size x size
square is cut out. An image that already is size x size is taken as it is (no resize, no crop), so
CIFAR-10 at 32 and MNIST at 28 keep every pixel. The same function decodes for the in-memory data
set (read_image_folder) and for the lazy one (advlab.data.lazy), so both give the same pixels.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from advlab.data.cache import cached_arrays, cached_fingerprint, source_key
from advlab.data.dataset import ImageDataset
from advlab.errors import AdvlabError

MAX_IMAGE_SIZE = 1024  # 1024 x 1024 x 3 bytes per image already; beyond that a typo, not a data set
EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
CROP_PCT = 0.875  # timm's default eval crop: resize to size / 0.875, keep the centre size x size
TRANSFORM = f"bicubic-shorter-side-center-crop-{CROP_PCT}"  # named in cache keys and fingerprints
GRAY_MODES = {"1", "L", "LA"}
COLOR_MODES = {"P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}
MAX_CLASS_INDEX = 1_000_000


def fit_image(img: Image.Image, size: int, crop_pct: float = CROP_PCT) -> Image.Image:
    """timm's eval transform on one PIL image: shorter side to floor(size / crop_pct) (bicubic),
    then the centre size x size crop. Images already size x size are returned unchanged."""
    if img.size == (size, size):
        return img
    width, height = img.size
    scale = math.floor(size / crop_pct)
    if width <= height:
        new = (scale, max(scale, int(scale * height / width)))
    else:
        new = (max(scale, int(scale * width / height)), scale)
    img = img.resize(new, Image.BICUBIC)
    left, top = int(round((new[0] - size) / 2.0)), int(round((new[1] - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def check_mode(img: Image.Image, path: Path) -> None:
    if img.mode not in GRAY_MODES | COLOR_MODES:
        raise AdvlabError(f"image {path} has mode {img.mode} (not 8-bit grayscale or colour); convert it to an "
                          "8-bit PNG or JPEG")


def decode_image(path: str | Path, size: int, channels: int) -> np.ndarray:
    """One file as a uint8 (channels, size, size) array; an undecodable file is a user error naming it."""
    try:
        with Image.open(path) as img:
            check_mode(img, Path(path))
            img = fit_image(img.convert("L" if channels == 1 else "RGB"), size)
            return np.ascontiguousarray(np.array(img, dtype=np.uint8).reshape(size, size, channels).transpose(2, 0, 1))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise AdvlabError(f"cannot decode image {path} ({exc}); remove or replace it") from None


def load_class_map(path: str | Path) -> dict[str, int]:
    """A class-index map: folder name -> the model's output index. Accepted forms: a JSON object
    {"folder": index}, a JSON list of folder names (index = position, e.g. the model's class names),
    or text lines "folder index" / "folder,index"."""
    path = Path(path)
    if not path.is_file():
        raise AdvlabError(f"--class-map {path} {'is a folder' if path.is_dir() else 'does not exist'}; give a JSON "
                          "or text file mapping folder names to the model's class indices")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AdvlabError(f"--class-map {path} cannot be read ({exc})") from None
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        parsed = None
    pairs: list[tuple[str, object]] = []
    if isinstance(parsed, dict):
        pairs = list(parsed.items())
    elif isinstance(parsed, list):
        pairs = [(name, i) for i, name in enumerate(parsed)]
        if not all(isinstance(name, str) for name, _ in pairs):
            raise AdvlabError(f"--class-map {path}: a JSON list must hold folder names (strings)")
    elif parsed is not None:
        raise AdvlabError(f"--class-map {path} must be a JSON object {{\"folder\": index}} or a list of names")
    else:
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.replace(",", " ").replace("\t", " ").split()
            if len(parts) != 2:
                raise AdvlabError(f"--class-map {path} line {number}: expected 'folder index', got {line[:80]!r}")
            pairs.append((parts[0], parts[1]))
    mapping: dict[str, int] = {}
    owner: dict[int, str] = {}
    for name, value in pairs:
        try:
            index = int(value) if not isinstance(value, bool) and str(value).strip().lstrip("-").isdigit() else None
        except (TypeError, ValueError):
            index = None
        if index is None or not 0 <= index < MAX_CLASS_INDEX:
            raise AdvlabError(f"--class-map {path}: folder {name!r} maps to {value!r}; give a class index "
                              f"in 0..{MAX_CLASS_INDEX - 1}")
        if index in owner:
            raise AdvlabError(f"--class-map {path}: folders {owner[index]!r} and {name!r} both map to index {index}")
        owner[index] = str(name)
        mapping[str(name)] = index
    if not mapping:
        raise AdvlabError(f"--class-map {path} maps no folder")
    return mapping


def class_folders(root: Path, class_map: dict[str, int] | None = None,
                  classes: list[str] | None = None) -> tuple[list[str], list[int], list[str]]:
    """(folder names, the label of each, class names by label) of root/<class>/.

    Without a map the subfolders in alphabetical order are the labels 0..K-1 (or `classes`, in the
    order given). With a map, each folder's label is its index there: a folder missing from the map,
    or a map entry with no folder, is a user error naming it."""
    if not root.is_dir():
        raise AdvlabError(f"image folder {root} {'is a file, not a folder' if root.exists() else 'does not exist'}")
    present = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if class_map is not None:
        missing = [name for name in class_map if name not in present]
        if missing:
            raise AdvlabError(f"the class map names folder(s) {', '.join(missing[:5])} that {root} does not have; "
                              "fix the map or add the folders")
        unmapped = [name for name in present if name not in class_map]
        if unmapped:
            raise AdvlabError(f"folder class(es) {', '.join(unmapped[:5])} in {root} are not in the class map (the "
                              "model has no output for them); map them or move them out")
        names = [f"class_{i}" for i in range(max(class_map.values()) + 1)]
        for name, index in class_map.items():
            names[index] = name
        folders = sorted(class_map, key=class_map.get)
        return folders, [class_map[f] for f in folders], names
    if classes is None:
        classes = present
    if not classes:
        raise AdvlabError(f"{root} has no class subfolders; expected {root}/<class>/*.png|jpg")
    return list(classes), list(range(len(classes))), list(classes)


def listing(root: Path, folders: list[str], labels: list[int]) -> list[tuple[Path, int]]:
    """Every image file under root/<folder>/ with its label, folder by folder, names sorted."""
    files = []
    for name, label in zip(folders, labels, strict=True):
        folder = root / name
        if not folder.is_dir():
            raise AdvlabError(f"class folder {folder} is missing")
        files += [(p, label) for p in sorted(folder.iterdir()) if p.suffix.lower() in EXTENSIONS and p.is_file()]
    if not files:
        raise AdvlabError(f"{root} holds no images ({', '.join(sorted(EXTENSIONS))}) in its class folders")
    return files


CONVERT_MODES = ("RGB", "L")  # --convert-mode: what a folder of mixed modes may be converted to


def check_convert_mode(convert_mode: str | None, channels: int | None) -> int | None:
    """The channels convert_mode implies (None: none asked); a contradicting --channels is refused."""
    if convert_mode is None:
        return channels
    if convert_mode not in CONVERT_MODES:
        raise AdvlabError(f"unknown --convert-mode {convert_mode!r}; choose RGB (3 channels) or L (grayscale)")
    implied = 1 if convert_mode == "L" else 3
    if channels is not None and channels != implied:
        raise AdvlabError(f"--channels {channels} contradicts --convert-mode {convert_mode} ({implied} channel"
                          f"{'s' if implied > 1 else ''}); give one of them")
    return implied


def native_shape(files: list[Path], size: int | None, channels: int | None,
                 convert_mode: str | None = None) -> tuple[int, int]:
    """(size, channels) where not given, from the images' headers (no pixels are decoded): the side
    they all share, and 1 channel when the images are grayscale, else 3. Images of different sizes
    need --image-size; a mode advlab cannot read is named. The images must share one mode (all L, all
    RGB, all P, ...; a palette is looked up, an alpha channel dropped): a folder of mixed modes is
    refused, naming one file of each, unless convert_mode ("RGB" or "L") says to convert them all."""
    channels = check_convert_mode(convert_mode, channels)
    if size is not None and convert_mode is not None:
        return size, channels  # nothing left to read from the headers: every image is converted and resized
    sizes: dict[tuple[int, int], Path] = {}
    modes: dict[str, Path] = {}
    for path in files:
        try:
            with Image.open(path) as img:  # reads the header only
                check_mode(img, path)
                sizes.setdefault(img.size, path)
                modes.setdefault(img.mode, path)
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise AdvlabError(f"cannot decode image {path} ({exc}); remove or replace it") from None
    if len(modes) > 1 and convert_mode is None:
        named = ", ".join(f"{p.parent.name}/{p.name} is {m}" for m, p in list(modes.items())[:4])
        more = f" and {len(modes) - 4} more modes" if len(modes) > 4 else ""
        raise AdvlabError(f"the images differ in mode ({named}{more}); pass --convert-mode RGB (or L for "
                          "grayscale) to convert them all, or convert the files to one mode")
    if size is None:
        if len(sizes) > 1:
            (a, pa), (b, pb) = list(sizes.items())[:2]
            raise AdvlabError(f"the images differ in size ({pa.name} is {a[0]}x{a[1]}, {pb.name} is {b[0]}x{b[1]}); "
                              "pass --image-size N to resize and centre-crop them all to N x N")
        (width, height), path = next(iter(sizes.items()))
        if width != height:
            raise AdvlabError(f"the images are {width}x{height}, not square; pass --image-size N to resize and "
                              "centre-crop them to N x N")
        size = width
    check_image_size(size)
    gray = all(m in GRAY_MODES for m in modes)
    return size, channels if channels is not None else (1 if gray else 3)


def check_image_size(size: int) -> None:
    if int(size) != size or not 1 <= size <= MAX_IMAGE_SIZE:
        raise AdvlabError(f"image size must be an integer in 1..{MAX_IMAGE_SIZE}, got {size}")


def list_folder(root: Path, size: int | None, channels: int | None, class_map: dict[str, int] | None = None,
                classes: list[str] | None = None, convert_mode: str | None = None) -> tuple[list, list[str], int, int]:
    """(files as (path, label), class names, image side, channels) of root/<class>/, the options
    checked and the side and channels defaulting to the images' own (native_shape: one mode, unless
    convert_mode)."""
    if size is not None:
        check_image_size(size)
    if channels not in (None, 1, 3):
        raise AdvlabError(f"channels must be 1 or 3, got {channels}")
    folders, labels, class_names = class_folders(root, class_map, classes)
    files = listing(root, folders, labels)
    return (files, class_names, *native_shape([p for p, _ in files], size, channels, convert_mode))


def read_image_folder(root: Path, size: int | None = None, channels: int | None = 3, name: str | None = None,
                      classes: list[str] | None = None, class_map: dict[str, int] | None = None,
                      convert_mode: str | None = None) -> ImageDataset:
    """Decode every image under root/<class>/ (fit_image: resize and centre crop to size x size),
    cached on disk, into memory.

    Classes are the subfolders in alphabetical order unless given (or mapped by class_map); images
    come in a fixed shuffled order. An undecodable file is a user error naming the file, and so are
    images of mixed modes unless convert_mode ("RGB" or "L") converts them all.
    """
    root = Path(root)
    files, class_names, size, channels = list_folder(root, size, channels, class_map, classes, convert_mode)

    def build() -> dict[str, np.ndarray]:
        images = np.empty((len(files), channels, size, size), dtype=np.uint8)
        for i, (path, _) in enumerate(files):
            images[i] = decode_image(path, size, channels)
        return {"images": images, "labels": np.array([c for _, c in files])}

    # every file's name, size and modification time (and bytes, when small), the labels and the transform
    key = source_key([p for p, _ in files], root) + "-" + hashlib.sha256(
        json.dumps([class_names, [c for _, c in files], size, channels, TRANSFORM]).encode()).hexdigest()[:12]
    arrays = cached_arrays(f"folder-{root.name}", key, build)
    # Folders list images class by class; a fixed permutation makes "the first N images" a fair
    # sample of all classes (the same N images every time).
    order = torch.randperm(len(files), generator=torch.Generator().manual_seed(0))
    meta = {"dataset": f"folder:{root}", "source": str(root)}
    if class_map is not None:
        meta["class_map"] = dict(class_map)
    data = ImageDataset(torch.from_numpy(arrays["images"])[order], torch.from_numpy(arrays["labels"]).long()[order],
                        list(class_names), name or root.name, meta, files=[str(files[i][0]) for i in order.tolist()])
    data.known_fingerprint = cached_fingerprint(f"folder-{root.name}", key, lambda: data.fingerprint)
    return data
