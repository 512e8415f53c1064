"""Options and helpers shared by the subcommands: data, device, models, run folders; the bodies that two
commands share (a black-box run: blackbox and attack --oracle; a training run: train and defend)."""

from __future__ import annotations

import argparse
import math
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from advlab.attacks.blackbox import HttpOracle, LocalOracle, Oracle
from advlab.data import ImageDataset, dataset_info, load_dataset
from advlab.data.folder import CONVERT_MODES, MAX_IMAGE_SIZE
from advlab.errors import AdvlabError
from advlab.evaluation.blackbox import BlackboxSettings, check_oracle_fits, run_blackbox
from advlab.models import SpecOptions, architecture, model_metadata
from advlab.models import check_model_fits as models_check_fits
from advlab.report.run import RunDir, check_run_destination
from advlab.report.sections import add_blackbox_section, add_training_section
from advlab.runtime import (
    PRECISIONS,
    BatchSize,
    atomic_write,
    check_writable_file,
    check_writable_folder,
    compile_model,
    resolve_device,
)
from advlab.training import TrainConfig, choose_recipe, default_config, distributed, train_model
from advlab.training import resolve_model as train_or_load
from advlab.training.trainer import SCHEDULES


def add_data_args(parser: argparse.ArgumentParser, dataset: str | None = "mnist") -> None:
    parser.add_argument("--dataset", default=dataset, help="mnist, cifar10 or folder:PATH (a folder of "
                        "<class>/ image subfolders, or with train/ and test/ inside) (default: %(default)s)")
    parser.add_argument("--data-dir", default=None, help="where data sets live (default: $ADVLAB_DATA, else the "
                        "per-user cache); MNIST falls back to the copy inside the package")
    parser.add_argument("--image-size", type=image_size, default=None, help="side of a folder data set's images, 1 "
                        "to 1024: each image's shorter side is resized (bicubic) to size / 0.875 and the centre "
                        "size x size kept, as timm's eval transform does (default: the images' own side, when they "
                        "all share one)")
    parser.add_argument("--channels", type=int, choices=(1, 3), default=None,
                        help="colour channels of a folder data set (default: 1 when every image is grayscale, else 3)")
    add_convert_mode_arg(parser)
    parser.add_argument("--class-map", default=None, help="folder data sets: a file mapping each class folder to the "
                        "model's output index (JSON {\"folder\": index}, a JSON list of names, or lines "
                        "'folder index'); default: folders in alphabetical order are classes 0..K-1")
    parser.add_argument("--lazy", action=argparse.BooleanOptionalAction, default=None,
                        help="folder data sets: read images from disk batch by batch (default: when the decoded "
                        "folder would take over 256 MiB)")
    parser.add_argument("--workers", type=nonnegative_int, default=None,
                        help="processes decoding a lazily read folder (default: the CPUs, at most 8; 0: none)")


def add_convert_mode_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--convert-mode", choices=CONVERT_MODES, default=None,
                        help="folder data sets whose images differ in mode (grayscale, RGB, palette, RGBA, ...): "
                        "convert them all to RGB or to L (grayscale); without it such a folder is refused")


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
    parser.add_argument("--out", default=None, help="run folder to write; must not exist yet or be empty "
                        "(default: runs/COMMAND-DATE-TIME, made unique)")
    add_overwrite_arg(parser)
    parser.set_defaults(run_folder_arg="out")


def add_overwrite_arg(parser: argparse.ArgumentParser) -> None:
    if not any("--overwrite" in action.option_strings for action in parser._actions):
        parser.add_argument("--overwrite", action="store_true", help="replace an earlier run folder at --out (and "
                            "existing output files such as --json); files advlab did not write are never replaced")


def declare_output_file(parser: argparse.ArgumentParser, dest: str, suffix: str | None = None) -> None:
    """Have option `dest` (a file advlab writes) checked before any work: writable, not a folder, not
    an existing file unless --overwrite."""
    add_overwrite_arg(parser)
    parser.set_defaults(output_files=[*(parser.get_default("output_files") or []), (dest, suffix)])


def declare_output_folder(parser: argparse.ArgumentParser, dest: str) -> None:
    """Have option `dest` (a new folder advlab writes, such as --save-poisoned) checked before any work:
    it must not exist yet and its place must be writable."""
    parser.set_defaults(output_folders=[*(parser.get_default("output_folders") or []), dest])


def check_destinations(args: argparse.Namespace) -> None:
    """Refuse unusable destinations (run folder, output files) before the command does any work."""
    overwrite = bool(getattr(args, "overwrite", False))
    if getattr(args, "run_folder_arg", None):
        check_run_destination(getattr(args, args.run_folder_arg), overwrite)
    for dest, suffix in getattr(args, "output_files", None) or []:
        value = getattr(args, dest, None)
        if value:
            check_writable_file(value, f"--{dest.replace('_', '-')}", overwrite, suffix)
    for dest in getattr(args, "output_folders", None) or []:
        value = getattr(args, dest, None)
        if value:
            flag = f"--{dest.replace('_', '-')}"
            if Path(value).exists():
                raise AdvlabError(f"{flag} {value} already exists; choose a new folder")
            check_writable_folder(Path(value), f"{flag} {value}")


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
    parser.add_argument("--lr", type=finite_float)
    parser.add_argument("--weight-decay", type=non_negative_float)
    parser.add_argument("--schedule", choices=SCHEDULES,
                        help="learning-rate schedule (default onecycle: peak at 25%%, Adam's beta1 cycled; cyclic: "
                        "Wong et al.'s triangle, peak at 40%%)")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                        help="random crops, and flips unless --no-flip (default: on for color data sets)")
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                        help="horizontal flips in the augmentation (default: on for cifar10; off for folders, whose "
                        "recipe is chosen from the data: flips mirror digits and text)")
    parser.add_argument("--seed", type=seed_int, default=0)
    parser.add_argument("--train-subset", type=positive_int, help="train on this many random training images")
    parser.add_argument("--checkpoint", default=None, help="also copy the checkpoint here (.safetensors; must not "
                        "exist yet unless --overwrite)")
    declare_output_file(parser, "checkpoint", ".safetensors")
    parser.add_argument("--force", action="store_true", help="retrain even when the cache has this config")
    add_device_arg(parser)
    add_speed_args(parser)
    add_out_arg(parser)
    add_progress_arg(parser)


def training_config(args: argparse.Namespace, defaults: dict | None = None, **fields) -> TrainConfig:
    """The data set's default recipe, then `defaults` (a defense's own, e.g. more epochs), then the
    command line's overrides, and fields such as recipe."""
    if args.model and architecture(args.model).kind != "classifier":
        raise AdvlabError(f"--model {args.model} is an {architecture(args.model).kind}, not a classifier; train it "
                          "with advlab autoencoder")
    if args.checkpoint and not args.checkpoint.endswith(".safetensors"):
        raise AdvlabError(f"--checkpoint must end in .safetensors, got {args.checkpoint}")
    if args.width is not None:
        fields.setdefault("model_extra", {})["width"] = args.width
    given = {"model": args.model, "epochs": args.epochs, "batch_size": args.batch_size, "optimizer": args.optimizer,
             "lr": args.lr, "weight_decay": args.weight_decay, "schedule": args.schedule, "augment": args.augment,
             "flip": getattr(args, "flip", None)}
    chosen = {k: (v if v is not None else (defaults or {}).get(k)) for k, v in given.items()}
    data = dataset_split(args, "train") if args.dataset.startswith("folder:") else None
    config = default_config(args.dataset, data=data, seed=args.seed, train_subset=args.train_subset,
                            precision=getattr(args, "precision", None), **chosen, **fields)
    if config.data_recipe:
        print(f"recipe: {config.data_recipe} ({choose_recipe(data.shape, len(data)).reason}); flags override it")
    return config


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not math.isfinite(value):  # nan, inf, and literals such as 1e400 that overflow to inf
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r} (not a finite number)")
    return value


def float_list(text: str) -> list[float]:
    """Comma-separated finite non-negative numbers (eps lists, budgets)."""
    values = []
    for part in (v for v in text.split(",") if v.strip()):
        try:
            value = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
        if not math.isfinite(value) or value < 0:
            raise argparse.ArgumentTypeError(f"expected finite non-negative numbers, got {part.strip()!r} in {text!r}")
        values.append(value)
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")
    return values


def positive_float(upper: float = math.inf):
    """An argparse type: a finite number in (0, upper]."""
    def parse(text: str) -> float:
        value = _number(text, "a positive number")
        if value <= 0 or value > upper:
            raise argparse.ArgumentTypeError(f"expected a number in (0, {upper:g}], got {text!r}")
        return value
    parse.__name__ = "positive number"
    return parse


def nonnegative_float(upper: float = math.inf):
    """An argparse type: a finite number in [0, upper]."""
    def parse(text: str) -> float:
        value = _number(text, "a non-negative number")
        if value < 0 or value > upper:
            raise argparse.ArgumentTypeError(f"expected a number in [0, {upper:g}], got {text!r}")
        return value
    parse.__name__ = "non-negative number"
    return parse


def probability(text: str) -> float:
    """An argparse type: a finite number in [0, 1]."""
    value = _number(text, "a number in [0, 1]")
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def open_fraction(text: str) -> float:
    """An argparse type: a finite number in (0, 1) (a share that must leave something on both sides)."""
    value = _number(text, "a number in (0, 1)")
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number strictly between 0 and 1, got {text!r}")
    return value


def image_size(text: str) -> int:
    value = positive_int(text)
    if value > MAX_IMAGE_SIZE:
        raise argparse.ArgumentTypeError(f"expected an image side of at most {MAX_IMAGE_SIZE}, got {value}")
    return value


def finite_float(text: str) -> float:
    """An argparse type: a number that is neither NaN nor infinite (argparse's float accepts both)."""
    return _number(text, "a finite number")


def non_negative_float(text: str) -> float:
    """An argparse type: a finite number >= 0 (nonnegative_float() with no upper bound)."""
    return nonnegative_float()(text)


def _integer(text: str, low: int, high: int | None, what: str, bounds: str | None = None) -> int:
    """An integer in [low, high] (high None: no upper bound), refused in one line naming what it must be."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < low or (high is not None and value > high):
        raise argparse.ArgumentTypeError(f"expected {bounds or what}, got {value}")
    return value


def positive_int(text: str) -> int:
    return _integer(text, 1, None, "a positive integer")


def nonnegative_int(text: str) -> int:
    return _integer(text, 0, None, "a non-negative integer")


def seed_int(text: str) -> int:
    """An argparse type: a seed, an integer in 0..2**63-1 (what torch.manual_seed accepts)."""
    return _integer(text, 0, 2**63 - 1, "an integer seed", "a seed in 0..2**63-1")


def port_number(text: str) -> int:
    return _integer(text, 0, 65535, "a port number", "a port in 0..65535")


def data_options(args: argparse.Namespace) -> dict:
    """The folder options of add_data_args as load_dataset's keyword arguments."""
    return {"image_size": getattr(args, "image_size", None), "channels": getattr(args, "channels", None),
            "class_map": getattr(args, "class_map", None), "lazy": getattr(args, "lazy", None),
            "workers": getattr(args, "workers", None), "convert_mode": getattr(args, "convert_mode", None)}


def dataset_split(args: argparse.Namespace, split: str, n: int | None = None) -> ImageDataset:
    return load_dataset(args.dataset, split, getattr(args, "data_dir", None), **data_options(args)).head(n)


def data_line(*splits: ImageDataset) -> str:
    """One printed line saying which data a run uses (source and fingerprint of each split)."""
    return "data: " + "; ".join(f"{d.name} ({len(d)} images {'x'.join(map(str, d.shape))}) from "
                                f"{d.meta.get('source', 'memory')}, fingerprint {d.fingerprint[:12]}" for d in splits)


MODEL_SPEC_HELP = ("an advlab checkpoint (.safetensors) or architecture name (trained on --dataset once, then "
                   "cached), timm:NAME (with --weights), PATH.py:FUNCTION or package.module:FUNCTION (a factory of "
                   "your own code returning an nn.Module: advlab imports and runs that code), a TorchScript archive "
                   "or an .onnx file (docs/models.md)")


def add_model_spec_args(parser: argparse.ArgumentParser) -> None:
    """The options that complete a model spec (timm, factory, TorchScript, ONNX); shared by every
    command that takes a model, and applied to each spec the command is given."""
    if any("--weights" in action.option_strings for action in parser._actions):
        return
    group = parser.add_argument_group("model spec", "what a foreign model spec cannot tell by itself "
                                      "(see `advlab inspect`)")
    group.add_argument("--weights", default=None, help="weights for timm:NAME or a factory: a .safetensors file or a "
                       "PyTorch state dict (.pt/.pth, read with weights_only: never unpickled beyond tensors)")
    group.add_argument("--mean", type=channel_values, default=None, help="the model expects normalized input: "
                       "put Normalize(mean, std) in front (comma-separated, one value or one per channel; timm "
                       "models take their config's unless given)")
    group.add_argument("--std", type=channel_values, default=None, help="see --mean")
    group.add_argument("--num-classes", type=positive_int, default=None,
                       help="classes the model predicts (timm: the head to build; default: from the weights)")
    group.add_argument("--input-size", type=input_size, default=None, help="image shape the model takes: SIZE or "
                       "CxHxW, e.g. 3x224x224 (default: from the spec, else the data)")
    group.add_argument("--class-names", default=None, help="text file, one class name per line, in the order of the "
                       "model's outputs")


def channel_values(text: str) -> tuple[float, ...]:
    values = tuple(_number(part, "comma-separated numbers") for part in text.split(",") if part.strip())
    if not 1 <= len(values) <= 64:
        raise argparse.ArgumentTypeError(f"expected 1 to 64 comma-separated numbers, got {text!r}")
    return values


def input_size(text: str) -> tuple[int, ...]:
    parts = text.lower().replace(",", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SIZE or CxHxW (e.g. 224 or 3x224x224), got {text!r}") from None
    if len(values) not in (1, 3) or min(values) < 1 or max(values[-2:]) > MAX_IMAGE_SIZE or values[0] > 64:
        raise argparse.ArgumentTypeError(f"expected SIZE or CxHxW with sides 1..{MAX_IMAGE_SIZE} and 1..64 "
                                         f"channels, got {text!r}")
    return tuple(values)


def spec_options(args: argparse.Namespace) -> SpecOptions:
    """The model-spec options of a command line (all None for a command without them)."""
    size = getattr(args, "input_size", None)
    shape = None
    if size is not None:
        shape = tuple(size) if len(size) == 3 else (_data_channels(args) or 3, size[0], size[0])
    return SpecOptions(weights=getattr(args, "weights", None), mean=getattr(args, "mean", None),
                       std=getattr(args, "std", None), num_classes=getattr(args, "num_classes", None),
                       input_shape=shape, class_names=getattr(args, "class_names", None))


def _data_channels(args: argparse.Namespace) -> int | None:
    shape = data_shape(args)
    return shape[0] if shape else None


def data_shape(args: argparse.Namespace) -> tuple[int, int, int] | None:
    """(C, H, W) of the command's data without reading it: a foreign model's input shape by default."""
    dataset = getattr(args, "dataset", None)
    if not dataset:
        return None
    if dataset.startswith("folder:"):
        size = getattr(args, "image_size", None)  # None: the folder's own size, unknown until it is read
        implied = 1 if getattr(args, "convert_mode", None) == "L" else 3
        return None if size is None else (getattr(args, "channels", None) or implied, size, size)
    try:
        channels, height, width, _ = dataset_info(dataset)
    except AdvlabError:
        return None
    return channels, height, width


def resolve_model(spec: str, args: argparse.Namespace, device: torch.device) -> tuple[nn.Module, dict]:
    """Any model spec (advlab.training.resolve_model): an architecture name is trained on the data as this
    command reads it (a folder's --image-size and --channels included), so it is cached for exactly that data."""
    dataset = getattr(args, "dataset", None)
    return train_or_load(spec, device, spec_options(args), dataset=dataset or "mnist",
                         data=(lambda split: dataset_split(args, split)) if dataset else None,
                         data_dir=getattr(args, "data_dir", None),
                         progress=getattr(args, "progress", True), default_shape=data_shape(args))


def check_model_fits(meta: dict, data: ImageDataset, source: str) -> None:
    """Refuse a model trained on another image shape or number of classes than the data."""
    models_check_fits(meta, data, source)


BATCH_SIZE_HELP = ("images per batch of the model's passes (default: chosen to fit the device's memory). A batch "
                   "that runs out of memory is retried at half the size, also when given; the size used is "
                   "reported")


def run_batch_size(args: argparse.Namespace, choose: Callable[[], int], device: torch.device) -> BatchSize:
    """The run's batch size (advlab.runtime.BatchSize, shared by all its loops): --batch-size when given,
    else choose() (a default that fits the device), said on stdout. Either way a batch that runs out of
    memory is retried at half the size, and record_batch_size reports the size the run ended with."""
    if getattr(args, "batch_size", None) is not None:
        return BatchSize(args.batch_size, given=True)
    size = int(choose())
    print(f"batch size {size} (chosen to fit {device.type} memory; --batch-size sets it)")
    return BatchSize(size)


def record_batch_size(run_dir: RunDir | None, batch: BatchSize) -> None:
    """The batch size the run used, in its metrics (metrics.json "batch_size") and as a line on stderr."""
    if run_dir is not None:
        run_dir.metrics["batch_size"] = batch.summary()
    print(batch.line(), file=sys.stderr)


def device_from(args: argparse.Namespace) -> torch.device:
    return resolve_device(args.device)


def number_list(text: str) -> list[float]:
    """Comma-separated numbers in (0, 1] (Linf budgets, shares of the image area), each possibly a
    fraction such as 8/255."""
    from fractions import Fraction

    try:
        values = [float(Fraction(v.strip())) for v in text.split(",") if v.strip()]
    except (ValueError, ZeroDivisionError, OverflowError):  # 1e400 overflows float(Fraction)
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers in (0, 1] such as 0.1,8/255, "
                                         f"got {text!r}") from None
    if not values or any(not 0 < v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected numbers in (0, 1] (pixel values and image shares), got {text!r}")
    return values


def number_tuple(count: int):
    """An argparse type: exactly `count` comma-separated numbers."""
    def parse(text: str) -> tuple[float, ...]:
        try:
            values = tuple(float(v) for v in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {count} comma-separated numbers, got {text!r}") from None
        if len(values) != count:
            raise argparse.ArgumentTypeError(f"expected {count} comma-separated numbers, got {text!r}")
        return values
    return parse


def add_run_args(parser: argparse.ArgumentParser, func) -> None:
    """The options every run-folder command ends with (--device, --out, --overwrite, --no-progress),
    and the function that runs it."""
    add_device_arg(parser)
    add_out_arg(parser)
    add_progress_arg(parser)
    parser.set_defaults(func=func)
# --- black-box runs: `advlab blackbox` and `advlab attack --oracle` share these options and this body ---
def add_oracle_args(parser: argparse.ArgumentParser, model_choice: bool = True) -> None:
    """The flags that choose and limit the oracle; model_choice: --oracle or --model, one required
    (a command with its own --model, such as attack, passes False)."""
    if model_choice:
        where = parser.add_mutually_exclusive_group(required=True)
        where.add_argument("--oracle", metavar="URL", help="URL of an `advlab serve` prediction API")
        where.add_argument("--model", help="an in-process oracle of any model spec: " + MODEL_SPEC_HELP)
        add_model_spec_args(parser)
    else:
        parser.add_argument("--oracle", metavar="URL", default=None,
                            help="URL of an `advlab serve` prediction API to attack black-box")
    parser.add_argument("--token", default=None, help="bearer token for --oracle (the server's --token)")
    parser.add_argument("--labels-only", action="store_true", help="in-process oracle answers top labels only")
    parser.add_argument("--budget", type=positive_int, default=None,
                        help="total oracle queries (images) allowed for the whole run (default: unlimited)")


def add_blackbox_args(parser: argparse.ArgumentParser) -> None:
    """The flags only a black-box attack run has (defaults: advlab.evaluation.blackbox.BlackboxSettings)."""
    parser.add_argument("--queries", type=positive_int, default=None, help="query limit per image (default 10000)")
    parser.add_argument("--p-init", type=probability, default=None, help="Square: initial window fraction p")
    parser.add_argument("--whitebox-pgd", action="store_true",
                        help="also run white-box PGD-100 on the same images (in-process --model only)")


def blackbox_settings(args: argparse.Namespace) -> BlackboxSettings:
    """The settings the command line gives; what it leaves unset takes BlackboxSettings' defaults."""
    given = {"attacks": tuple(a.strip() for a in args.attack.split(",") if a.strip()), "norm": args.norm,
             "eps": args.eps, "n": args.n, "queries": args.queries, "batch_size": args.batch_size,
             "p_init": args.p_init, "seed": args.seed, "whitebox_pgd": args.whitebox_pgd}
    return BlackboxSettings(**{k: v for k, v in given.items() if v is not None})


def make_oracle(args: argparse.Namespace, device: torch.device, budget: bool = True
                ) -> tuple[Oracle, str, nn.Module | None]:
    """The oracle the flags describe: (oracle, description, local model or None)."""
    limit = args.budget if budget else None
    if getattr(args, "oracle", None):
        if args.labels_only:
            raise AdvlabError("--labels-only applies to an in-process --model; a server decides with its own "
                              "--labels-only")
        return HttpOracle(args.oracle, token=args.token, budget=limit), args.oracle, None
    if not args.model:
        raise AdvlabError("give --oracle URL (an `advlab serve` API) or --model for an in-process oracle")
    model, meta = resolve_model(args.model, args, device)
    info = model_metadata(meta, args.model)
    if info.kind != "classifier":
        raise AdvlabError(f"{args.model} is a {info.architecture} {info.kind}; an oracle needs a classifier")
    return (LocalOracle(model, labels_only=args.labels_only, budget=limit, input_shape=info.input_shape),
            f"in-process {args.model}", model)


def run_oracle_attack(args: argparse.Namespace) -> int:
    """`advlab blackbox` and `advlab attack --oracle`: advlab.evaluation.blackbox.run_blackbox, then the run folder."""
    settings = blackbox_settings(args)
    settings.build()  # unknown names fail before any work
    device = device_from(args)
    data = dataset_split(args, "test", settings.n)
    oracle, described, model = make_oracle(args, device)
    try:
        check_oracle_fits(oracle, data)
        x, y = data.tensors()
        config = {"oracle": described, "attacks": list(settings.attacks), "norm": settings.norm, "eps": settings.bound,
                  "n": len(x), "queries_per_image": settings.queries, "budget": args.budget, "seed": settings.seed,
                  "dataset": args.dataset, "labels_only": oracle.labels_only}
        # the default batch is BlackboxSettings' (a remote oracle's memory is not ours to measure)
        batch = BatchSize(settings.batch_size, given=args.batch_size is not None,
                          origin=None if args.batch_size is not None else "the black-box runs' default")
        with RunDir(args.out, "blackbox", config, overwrite=args.overwrite) as run_dir:
            run = run_blackbox(oracle, x, y, settings, model, device, args.progress, batch)
            add_blackbox_section(run_dir, run, x, y, data.name, args.dataset, described)
            record_batch_size(run_dir, batch)
            out = run_dir.commit()
    finally:
        if isinstance(oracle, HttpOracle):
            oracle.close()
    for name, s in run.summaries.items():
        med = "n/a" if s["median_queries"] is None else f"{s['median_queries']:.0f}"
        print(f"{name}: success {s['success_rate']:.3f} on {s['clean_correct']} correctly classified "
              f"images, median queries {med}, {s['total_queries']} queries, {s['seconds']:.0f} s")
    if run.whitebox is not None:
        print(f"white-box PGD success {run.whitebox['success_rate']:.3f}; black-box/white-box: "
              + ", ".join(f"{k} {v['ratio_to_whitebox']:.3f}" for k, v in run.summaries.items()))
    print(f"report: {out / 'report.html'}")
    return 0


# --- training runs: `advlab train` and `advlab defend` ---
def run_training(args: argparse.Namespace, config: TrainConfig, batch_loss, command: str, title: str,
                 note: str = "", epoch_end=None) -> int:
    """Train (or fetch from the cache), write the run folder and print the checkpoint. Under torchrun
    every process trains its share and only rank 0 writes anything."""
    device = device_from(args)
    train_data, test_data = dataset_split(args, "train"), dataset_split(args, "test")
    data = {"train": train_data.describe(), "test": test_data.describe()}
    options = {"batch_loss": batch_loss, "train_data": train_data, "test_data": test_data,
               "use_cache": not args.force, "epoch_end": epoch_end, "compile": args.compile}
    if distributed.init_distributed(device).enabled and not distributed.context().is_main:
        train_model(config, device, args.data_dir, progress=False, **options)
        return 0
    # N processes follow one process's trajectory (within noise), so N is not part of the cache key
    print(data_line(train_data, test_data))
    with RunDir(args.out, command, {"train_config": config.to_dict(), "device": str(device), "data": data},
                overwrite=args.overwrite) as run_dir:
        model, meta, path, cached = train_model(config, device, args.data_dir, progress=args.progress, **options)
        run_dir.metrics = {"checkpoint": str(path), "cached": cached, "recipe": config.recipe, "data": data,
                           "resumed_after_epoch": meta.get("resumed_after_epoch"),
                           "test_accuracy": meta["test_accuracy"], "train_seconds": meta.get("train_seconds"),
                           "history": meta.get("history", [])}
        add_training_section(run_dir, config, meta, title, note)
        if args.checkpoint:
            atomic_write(args.checkpoint, lambda tmp: shutil.copyfile(path, tmp))
        out = run_dir.commit()
    print(f"{'cached' if cached else 'trained'} {config.model} on {config.dataset}: test accuracy "
          f"{meta['test_accuracy']:.4f}\ncheckpoint: {args.checkpoint or path}\nrun folder: {out}")
    return 0
