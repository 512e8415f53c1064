"""Checkpoints: weights in one safetensors file, metadata as JSON in its header. Never unpickled.

The metadata holds the architecture and its arguments, the data set, the training (or defense)
configuration, measured metrics and the advlab version. A checkpoint is input like any other file:
its metadata is checked against a schema (types, ranges) and the architecture it describes is built
on PyTorch's "meta" device (no memory) and compared, tensor by tensor, with the shapes the file
actually holds, all before anything is allocated. Only then are the weights read.
"""

from __future__ import annotations

import inspect
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from advlab import __version__
from advlab.errors import AdvlabError
from advlab.models.registry import ARCHITECTURES, build_model
from advlab.runtime import atomic_write

META_KEY = "advlab"
BASE_ARGS = ("channels", "size", "num_classes", "mean", "std")
MAX_CHANNELS = 64
MAX_SIZE = 4096
MAX_CLASSES = 100_000
MAX_WIDTH = 65_536  # any architecture-specific size (hidden units, width, latent); the weights bound it further
MAX_HIDDEN_LAYERS = 64


@dataclass(frozen=True)
class CheckpointMeta:
    """A checkpoint's metadata after validation: what serve, blackbox and the other commands read.

    ``raw`` is the whole (validated) JSON object, for fields only one command uses (history, recipe).
    """

    architecture: str
    kind: str  # "classifier" or "autoencoder"
    channels: int
    size: int
    num_classes: int
    model_args: dict
    input_shape: tuple[int, int, int]
    classes: list[str]
    dataset: str | None = None
    recipe: dict | None = None
    test_accuracy: float | None = None
    raw: dict = field(default_factory=dict, repr=False)


def save_checkpoint(path: str | Path, model: nn.Module, meta: dict) -> Path:
    """Write model's weights and meta (must hold 'architecture' and 'model_args') atomically."""
    if "architecture" not in meta or "model_args" not in meta:
        raise ValueError("checkpoint metadata needs 'architecture' and 'model_args'")
    meta = {**meta, "advlab_version": __version__}
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    header = {META_KEY: json.dumps(meta, sort_keys=True)}
    return atomic_write(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=header))


def _read_header(path: Path) -> tuple[dict, dict[str, tuple[int, ...]]]:
    """The raw metadata object and the shape of every tensor in the file (no tensor data is read)."""
    if not path.is_file():
        raise AdvlabError(f"checkpoint {path} does not exist" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, UnicodeDecodeError, ValueError) as exc:
        raise AdvlabError(f"{path} is corrupt, truncated or not a safetensors file ({exc})") from None
    try:
        meta = json.loads(header[META_KEY])
    except (KeyError, TypeError, ValueError, RecursionError) as exc:
        raise AdvlabError(f"{path} is not an advlab checkpoint (no valid advlab metadata: {exc!r})") from None
    if not isinstance(meta, dict) or "architecture" not in meta or "model_args" not in meta:
        raise AdvlabError(f"{path}: checkpoint metadata lacks the architecture; it was not written by advlab")
    return meta, shapes


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_in(value, name: str, lo: int, hi: int) -> int:
    if not _is_int(value) or not lo <= value <= hi:
        raise AdvlabError(f"{name} must be an integer in {lo}..{hi}, got {_short(value)}")
    return value


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _float_list(value, name: str, length: int, positive: bool) -> list[float]:
    if (not isinstance(value, list) or len(value) != length
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise AdvlabError(f"{name} must be a list of {length} numbers (one per channel), got {_short(value)}")
    values = [float(v) for v in value]
    if not all(math.isfinite(v) and (v > 0 if positive else True) for v in values):
        raise AdvlabError(f"{name} must hold finite{' positive' if positive else ''} numbers, got {_short(value)}")
    return values


def validate_metadata(meta: dict, source: str = "checkpoint") -> CheckpointMeta:
    """Check a checkpoint's metadata against the schema; return it typed. Raises AdvlabError naming
    the field at fault. Sizes are checked against fixed bounds here; against the file's weights in
    read_checkpoint."""
    where = f"{source}: metadata field"
    if not isinstance(meta, dict):
        raise AdvlabError(f"{source}: metadata must be a JSON object, got {type(meta).__name__}")
    name = meta.get("architecture")
    if not isinstance(name, str) or name not in ARCHITECTURES:
        raise AdvlabError(f"{where} 'architecture' must be one of {', '.join(ARCHITECTURES)}, got {_short(name)}")
    args = meta.get("model_args")
    if not isinstance(args, dict):
        raise AdvlabError(f"{where} 'model_args' must be an object, got {type(args).__name__}")
    missing = [k for k in BASE_ARGS if k not in args]
    if missing:
        raise AdvlabError(f"{where} 'model_args' lacks {', '.join(missing)}")
    channels = _int_in(args["channels"], f"{where} 'model_args.channels'", 1, MAX_CHANNELS)
    size = _int_in(args["size"], f"{where} 'model_args.size'", 1, MAX_SIZE)
    num_classes = _int_in(args["num_classes"], f"{where} 'model_args.num_classes'", 1, MAX_CLASSES)
    clean = {"channels": channels, "size": size, "num_classes": num_classes,
             "mean": _float_list(args["mean"], f"{where} 'model_args.mean'", channels, positive=False),
             "std": _float_list(args["std"], f"{where} 'model_args.std'", channels, positive=True)}
    spec = ARCHITECTURES[name]
    accepted = set(inspect.signature(spec.build).parameters) - set(BASE_ARGS)
    for key, value in args.items():
        if key in BASE_ARGS:
            continue
        if key not in accepted:
            raise AdvlabError(f"{where} 'model_args.{key}' is not an argument of {name} "
                              f"(it takes {', '.join(sorted(accepted)) or 'none beyond the image shape'})")
        label = f"{where} 'model_args.{key}'"
        if isinstance(value, list):
            if not 1 <= len(value) <= MAX_HIDDEN_LAYERS:
                raise AdvlabError(f"{label} must list 1..{MAX_HIDDEN_LAYERS} sizes, got {len(value)}")
            clean[key] = [_int_in(v, label, 1, MAX_WIDTH) for v in value]
        else:
            clean[key] = _int_in(value, label, 1, MAX_WIDTH)
    shape = (channels, size, size)
    given_shape = meta.get("input_shape")
    if given_shape is not None and (not isinstance(given_shape, list) or list(given_shape) != list(shape)):
        raise AdvlabError(f"{where} 'input_shape' must be {list(shape)} (channels, size, size from model_args), "
                          f"got {_short(given_shape)}")
    classes = meta.get("classes")
    if classes is None:
        classes = [str(k) for k in range(num_classes)]
    elif (not isinstance(classes, list) or len(classes) != num_classes
          or not all(isinstance(c, str) and len(c) <= 200 for c in classes)):
        raise AdvlabError(f"{where} 'classes' must list {num_classes} names (strings), got {_short(classes)}")
    dataset = meta.get("dataset")
    if dataset is not None and not isinstance(dataset, str):
        raise AdvlabError(f"{where} 'dataset' must be a string, got {_short(dataset)}")
    recipe = meta.get("recipe")
    if recipe is not None and not isinstance(recipe, dict):
        raise AdvlabError(f"{where} 'recipe' must be an object, got {_short(recipe)}")
    for key in ("test_accuracy", "test_mse", "train_seconds"):
        value = meta.get(key)
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)
                                  or not math.isfinite(value) or value < 0):
            raise AdvlabError(f"{where} '{key}' must be a finite non-negative number, got {_short(value)}")
    for key, kind in (("history", list), ("train_config", dict)):
        if meta.get(key) is not None and not isinstance(meta[key], kind):
            raise AdvlabError(f"{where} '{key}' must be a JSON {kind.__name__}, got {_short(meta[key])}")
    accuracy = meta.get("test_accuracy")
    return CheckpointMeta(architecture=name, kind=spec.kind, channels=channels, size=size, num_classes=num_classes,
                          model_args=clean, input_shape=shape, classes=list(classes), dataset=dataset, recipe=recipe,
                          test_accuracy=None if accuracy is None else float(accuracy),
                          raw={**meta, "model_args": clean, "input_shape": list(shape), "classes": list(classes)})


def _build(info: CheckpointMeta, source: str) -> nn.Module:
    try:
        return build_model(info.architecture, info.model_args)
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:  # e.g. an image side the layers cannot take
        raise AdvlabError(f"{source}: {info.architecture} cannot be built from its metadata "
                          f"(model_args {_short(info.model_args)}: {exc})") from None


def _check_weights_fit(info: CheckpointMeta, shapes: dict[str, tuple[int, ...]], source: str) -> None:
    """Build the architecture on the meta device (shapes only, nothing allocated) and compare."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in _build(info, source).state_dict().items()}
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong = sorted(k for k in set(expected) & set(shapes) if expected[k] != shapes[k])
    if missing or unexpected or wrong:
        detail = "; ".join(part for part in (
            f"missing {', '.join(missing[:3])}" if missing else "",
            f"unexpected {', '.join(unexpected[:3])}" if unexpected else "",
            f"wrong shape for {', '.join(wrong[:3])}" if wrong else "") if part)
        raise AdvlabError(f"{source}: weights do not match architecture {info.architecture!r} ({detail}); "
                          "the metadata and the weights come from different models")


def read_checkpoint(path: str | Path) -> CheckpointMeta:
    """A checkpoint's validated, typed metadata, checked against the tensor shapes in the file
    (no weights are loaded)."""
    path = Path(path)
    meta, shapes = _read_header(path)
    info = validate_metadata(meta, str(path))
    _check_weights_fit(info, shapes, str(path))
    return info


def read_metadata(path: str | Path) -> dict:
    """The JSON metadata of a checkpoint (validated), without loading its weights."""
    return read_checkpoint(path).raw


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, CheckpointMeta]:
    """Rebuild the model a checkpoint describes, load its weights; return (model, typed metadata)."""
    info = read_checkpoint(path)
    model = _build(info, str(path))
    try:
        weights = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise AdvlabError(f"{path}: weights are corrupt or truncated ({exc})") from None
    bad = sorted(k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all())
    if bad:
        raise AdvlabError(f"{path}: weights hold NaN or infinite values ({', '.join(bad[:3])}); the checkpoint is "
                          "corrupt or came from a diverged run")
    model.load_state_dict(weights)
    return model.to(device).eval(), info


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model a checkpoint describes, load its weights, and return (model, metadata dict)."""
    model, info = load_model(path, device)
    return model, info.raw
