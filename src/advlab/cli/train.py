"""advlab train: train a model with its data set's default recipe (or your overrides), cached by config."""

from __future__ import annotations

import argparse
import shutil

from advlab.cli.common import (
    add_data_args,
    add_device_arg,
    add_out_arg,
    add_progress_arg,
    dataset_split,
    device_from,
    positive_int,
)
from advlab.errors import AdvlabError
from advlab.models import architecture
from advlab.report.figures import training_curve_figure
from advlab.report.run import RunDir
from advlab.training import default_config, distributed, train_model


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (cached: the same config trains once)",
                       description="Train a classifier. Unset options take the data set's default recipe "
                       "(mnist: mnist_cnn, Adam, 3 epochs; cifar10: cifar_cnn, SGD, 30 epochs with crop/flip). "
                       "The checkpoint is cached under a hash of the full config.")
    p.add_argument("--model", default=None, help="architecture name (default: the data set's default)")
    add_data_args(p)
    p.add_argument("--epochs", type=positive_int)
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--optimizer", choices=("sgd", "adam"))
    p.add_argument("--lr", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--schedule", choices=("onecycle", "cosine", "step", "constant"))
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="random crop and flip (default: on for color data sets)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-subset", type=positive_int, help="train on this many random training images")
    p.add_argument("--checkpoint", default=None, help="also copy the checkpoint here (.safetensors)")
    p.add_argument("--force", action="store_true", help="retrain even when the cache has this config")
    add_device_arg(p)
    add_out_arg(p)
    add_progress_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    device = device_from(args)
    if distributed.init_distributed(device).enabled and not distributed.context().is_main:
        return run_worker(args, device)
    if args.model:
        architecture(args.model)
    if args.checkpoint and not args.checkpoint.endswith(".safetensors"):
        raise AdvlabError(f"--checkpoint must end in .safetensors, got {args.checkpoint}")
    config = _config(args)
    train_data, test_data = dataset_split(args, "train"), dataset_split(args, "test")
    # N processes follow one process's trajectory (within noise), so N is not part of the cache key
    with RunDir(args.out, "train", {"train_config": config.to_dict(), "device": str(device)}) as run_dir:
        model, meta, path, cached = train_model(config, device, args.data_dir, progress=args.progress,
                                                train_data=train_data, test_data=test_data, use_cache=not args.force)
        run_dir.metrics = {"checkpoint": str(path), "cached": cached, "test_accuracy": meta["test_accuracy"],
                           "train_seconds": meta.get("train_seconds"), "history": meta.get("history", [])}
        curve = training_curve_figure(meta["history"], run_dir.figure_path("training.png"),
                                      f"{config.model} on {config.dataset}")
        run_dir.add_section("Training", f"{config.model} on {config.dataset}: clean test accuracy "
                            f"{meta['test_accuracy']:.4f} after {config.epochs} epochs "
                            f"({meta.get('train_seconds', 0):.0f} s on {meta.get('device')}).",
                            figures=[(curve.name, "training loss and accuracy per epoch")])
        if args.checkpoint:
            shutil.copyfile(path, args.checkpoint)
        out = run_dir.commit()
    print(f"{'cached' if cached else 'trained'} {config.model} on {config.dataset}: test accuracy "
          f"{meta['test_accuracy']:.4f}\ncheckpoint: {args.checkpoint or path}\nrun folder: {out}")
    return 0


def run_worker(args: argparse.Namespace, device) -> int:
    """A torchrun process other than rank 0: train its share, write nothing."""
    config = _config(args)
    train_model(config, device, args.data_dir, progress=False, train_data=dataset_split(args, "train"),
                test_data=dataset_split(args, "test"), use_cache=not args.force)
    return 0


def _config(args: argparse.Namespace):
    return default_config(args.dataset, model=args.model, epochs=args.epochs, batch_size=args.batch_size,
                          optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay,
                          schedule=args.schedule, augment=args.augment, seed=args.seed,
                          train_subset=args.train_subset)
