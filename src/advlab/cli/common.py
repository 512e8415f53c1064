"""Options and helpers shared by the subcommands: data, device, models, run folders."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from advlab.data import ImageDataset, load_dataset
from advlab.errors import AdvlabError
from advlab.models import architecture, load_checkpoint
from advlab.runtime import resolve_device
from advlab.training import default_config, train_model


def add_data_args(parser: argparse.ArgumentParser, dataset: str | None = "mnist") -> None:
    parser.add_argument("--dataset", default=dataset, help="mnist, cifar10 or folder:PATH (a folder of "
                        "<class>/ image subfolders, or with train/ and test/ inside) (default: %(default)s)")
    parser.add_argument("--data-dir", default=None, help="where data sets live (default: $ADVLAB_DATA, else the "
                        "per-user cache); MNIST falls back to the copy inside the package")
    parser.add_argument("--image-size", type=int, default=32, help="side images of a folder data set are "
                        "resized to (default: %(default)s)")
    parser.add_argument("--channels", type=int, choices=(1, 3), default=3,
                        help="colour channels of a folder data set (default: %(default)s)")


def add_device_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda (default: auto)")


def add_out_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=None, help="run folder to write (default: runs/COMMAND-TIMESTAMP)")


def add_progress_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def dataset_split(args: argparse.Namespace, split: str, n: int | None = None) -> ImageDataset:
    return load_dataset(args.dataset, split, args.data_dir, args.image_size, args.channels).head(n)


def resolve_model(spec: str, args: argparse.Namespace, device: torch.device) -> tuple[nn.Module, dict]:
    """A checkpoint path, or an architecture name meaning its default recipe on --dataset (trained once,
    then taken from the cache)."""
    if spec.endswith(".safetensors") or Path(spec).exists():
        return load_checkpoint(spec, device)
    architecture(spec)  # unknown names fail here with the list of choices
    config = default_config(args.dataset, model=spec)
    model, meta, _, _ = train_model(config, device, args.data_dir, progress=getattr(args, "progress", True))
    return model, meta


def check_model_fits(meta: dict, data: ImageDataset, source: str) -> None:
    """Refuse a model trained on another image shape or number of classes than the data."""
    shape = tuple(meta.get("input_shape") or (meta["model_args"]["channels"], meta["model_args"]["size"],
                                              meta["model_args"]["size"]))
    if shape != data.shape:
        raise AdvlabError(f"{source} takes images of shape {shape} ({meta.get('dataset', '?')}) but {data.name} "
                          f"images are {data.shape}; pass the matching --dataset")
    classes = meta["model_args"].get("num_classes")
    if classes is not None and classes != data.num_classes:
        raise AdvlabError(f"{source} predicts {classes} classes but {data.name} has {data.num_classes}")


def device_from(args: argparse.Namespace) -> torch.device:
    return resolve_device(args.device)
