"""advlab train: train a model with its data set's default recipe (or your overrides), cached by config."""

from __future__ import annotations

import argparse
import shutil

from advlab.cli.common import add_training_args, data_line, dataset_split, device_from, training_config
from advlab.report.figures import training_curve_figure
from advlab.report.run import RunDir
from advlab.runtime import atomic_write
from advlab.training import BatchLoss, TrainConfig, cross_entropy_loss, distributed, train_model


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (cached: the same config trains once)",
                       description="Train a classifier. Unset options take the data set's default recipe "
                       "(mnist: mnist_cnn, Adam, 3 epochs; cifar10: cifar_cnn, SGD, 30 epochs with crop/flip). "
                       "The checkpoint is cached under a hash of the full config. Runs unchanged under "
                       "`torchrun --nproc_per_node N -m advlab.cli.main train ...`.")
    add_training_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return run_training(args, training_config(args), cross_entropy_loss, "train", "Training")


def run_training(args: argparse.Namespace, config: TrainConfig, batch_loss: BatchLoss, command: str,
                 title: str, note: str = "", epoch_end=None) -> int:
    """Train (or fetch from the cache), write the run folder and print the checkpoint. Under torchrun
    every process trains its share and only rank 0 writes anything."""
    device = device_from(args)
    train_data, test_data = dataset_split(args, "train"), dataset_split(args, "test")
    data = {"train": train_data.describe(), "test": test_data.describe()}
    if distributed.init_distributed(device).enabled and not distributed.context().is_main:
        train_model(config, device, args.data_dir, batch_loss=batch_loss, progress=False, train_data=train_data,
                    test_data=test_data, use_cache=not args.force, epoch_end=epoch_end,
                    compile=args.compile)
        return 0
    # N processes follow one process's trajectory (within noise), so N is not part of the cache key
    print(data_line(train_data, test_data))
    with RunDir(args.out, command, {"train_config": config.to_dict(), "device": str(device), "data": data},
                overwrite=args.overwrite) as run_dir:
        model, meta, path, cached = train_model(config, device, args.data_dir, batch_loss=batch_loss,
                                                progress=args.progress, train_data=train_data, test_data=test_data,
                                                use_cache=not args.force, epoch_end=epoch_end,
                                                compile=args.compile)
        run_dir.metrics = {"checkpoint": str(path), "cached": cached, "recipe": config.recipe, "data": data,
                           "resumed_after_epoch": meta.get("resumed_after_epoch"),
                           "test_accuracy": meta["test_accuracy"], "train_seconds": meta.get("train_seconds"),
                           "history": meta.get("history", [])}
        curve = training_curve_figure(meta["history"], run_dir.figure_path("training.png"),
                                      f"{config.model} on {config.dataset}")
        run_dir.add_section(title, f"{config.model} on {config.dataset} (recipe {config.recipe}): clean test "
                            f"accuracy {meta['test_accuracy']:.4f} after {config.epochs} epochs "
                            f"({meta.get('train_seconds', 0):.0f} s on {meta.get('device')}). {note}".strip(),
                            figures=[(curve.name, "training loss and accuracy per epoch")])
        if args.checkpoint:
            atomic_write(args.checkpoint, lambda tmp: shutil.copyfile(path, tmp))
        out = run_dir.commit()
    print(f"{'cached' if cached else 'trained'} {config.model} on {config.dataset}: test accuracy "
          f"{meta['test_accuracy']:.4f}\ncheckpoint: {args.checkpoint or path}\nrun folder: {out}")
    return 0
