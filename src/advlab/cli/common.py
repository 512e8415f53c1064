"""Options and helpers shared by the subcommands: data, device, models, run folders."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from advlab.data import ImageDataset, load_dataset
from advlab.errors import AdvlabError
from advlab.models import architecture, load_checkpoint
from advlab.runtime import PRECISIONS, compile_model, resolve_device
from advlab.training import TrainConfig, default_config, train_model
from advlab.training.trainer import SCHEDULES


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


def add_speed_args(parser: argparse.ArgumentParser) -> None:
    """Options that change how fast the passes run on a GPU (docs/gpu.md)."""
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="arithmetic of the forward and backward passes: fp32, or bf16 autocast (for GPUs with "
                        "bf16 units; reported decisions stay float32) (default: %(default)s)")
    parser.add_argument("--compile", action="store_true",
                        help="run the model through torch.compile (compiles first; pays off in long runs on a GPU)")


def speed_up(model: nn.Module, args: argparse.Namespace) -> nn.Module:
    """The model as the passes should run it: compiled when --compile was given."""
    return compile_model(model) if getattr(args, "compile", False) else model


def add_out_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=None, help="run folder to write (default: runs/COMMAND-TIMESTAMP)")


def add_progress_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")


def add_training_args(parser: argparse.ArgumentParser) -> None:
    """The options of every command that trains (train, defend): unset ones take the recipe's default."""
    parser.add_argument("--model", default=None, help="architecture name (default: the data set's default)")
    add_data_args(parser)
    parser.add_argument("--width", type=positive_int, default=None,
                        help="channel width of cifar_cnn (default: 32)")
    parser.add_argument("--epochs", type=positive_int)
    parser.add_argument("--batch-size", type=positive_int)
    parser.add_argument("--optimizer", choices=("sgd", "adam"))
    parser.add_argument("--lr", type=float)
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument("--schedule", choices=SCHEDULES,
                        help="learning-rate schedule (default onecycle: peak at 25%%, Adam's beta1 cycled; cyclic: "
                        "Wong et al.'s triangle, peak at 40%%)")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                        help="random crop and flip (default: on for color data sets)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-subset", type=positive_int, help="train on this many random training images")
    parser.add_argument("--checkpoint", default=None, help="also copy the checkpoint here (.safetensors)")
    parser.add_argument("--force", action="store_true", help="retrain even when the cache has this config")
    add_device_arg(parser)
    add_speed_args(parser)
    add_out_arg(parser)
    add_progress_arg(parser)


def training_config(args: argparse.Namespace, defaults: dict | None = None, **fields) -> TrainConfig:
    """The data set's default recipe, then `defaults` (a defense's own, e.g. more epochs), then the
    command line's overrides, and fields such as recipe."""
    if args.model:
        architecture(args.model)
    if args.checkpoint and not args.checkpoint.endswith(".safetensors"):
        raise AdvlabError(f"--checkpoint must end in .safetensors, got {args.checkpoint}")
    if args.width is not None:
        fields.setdefault("model_extra", {})["width"] = args.width
    given = {"model": args.model, "epochs": args.epochs, "batch_size": args.batch_size, "optimizer": args.optimizer,
             "lr": args.lr, "weight_decay": args.weight_decay, "schedule": args.schedule, "augment": args.augment}
    chosen = {k: (v if v is not None else (defaults or {}).get(k)) for k, v in given.items()}
    return default_config(args.dataset, seed=args.seed, train_subset=args.train_subset,
                          precision=getattr(args, "precision", None), **chosen, **fields)


def float_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected non-negative numbers, got {text!r}")
    return values


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
