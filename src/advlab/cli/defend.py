"""advlab defend: train a model with a defense recipe; the result is an ordinary (cached) checkpoint.

Each method is one entry of METHODS: its options, the TrainConfig.recipe it records (part of the
cache key and of the checkpoint metadata) and the batch loss it trains with. Adding a method
(augmentation, distillation, adversarial training) means adding one entry.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Callable
from dataclasses import dataclass

from advlab.cli.common import (
    add_data_args,
    add_device_arg,
    add_out_arg,
    add_progress_arg,
    dataset_split,
    device_from,
    positive_int,
)
from advlab.defenses.noise import GaussianNoiseLoss, noise_recipe
from advlab.errors import AdvlabError
from advlab.models import architecture
from advlab.report.figures import training_curve_figure
from advlab.report.run import RunDir
from advlab.training import TrainConfig, default_config, train_model
from advlab.training.trainer import BatchLoss


@dataclass(frozen=True)
class Method:
    summary: str
    recipe: Callable[[argparse.Namespace], dict]  # what the checkpoint records; keys the cache
    batch_loss: Callable[[TrainConfig], BatchLoss]  # built from the validated config


def _noise_recipe(args: argparse.Namespace) -> dict:
    if args.sigma is None:
        raise AdvlabError("--method noise needs --sigma (the noise level you will certify at, e.g. 0.25)")
    return noise_recipe(args.sigma)


METHODS: dict[str, Method] = {
    "noise": Method("Gaussian noise augmentation at --sigma, the base model of randomized smoothing "
                    "(Cohen et al. 2019)", _noise_recipe,
                    lambda config: GaussianNoiseLoss(config.recipe["sigma"], seed=config.seed)),
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    methods = "; ".join(f"{name}: {m.summary}" for name, m in METHODS.items())
    p = sub.add_parser("defend", help="train a model with a defense (cached like advlab train)",
                       description=f"Train a classifier with a defense recipe. Methods: {methods}. The checkpoint "
                       "records the recipe; unset training options take the data set's default recipe.")
    p.add_argument("--method", required=True, choices=sorted(METHODS), help="the defense")
    p.add_argument("--sigma", type=float, default=None, help="noise: Gaussian noise level on the [0, 1] pixel scale")
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


def defense_config(args: argparse.Namespace) -> TrainConfig:
    method = METHODS[args.method]
    if args.model:
        architecture(args.model)
    return default_config(args.dataset, model=args.model, epochs=args.epochs, batch_size=args.batch_size,
                          optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay,
                          schedule=args.schedule, augment=args.augment, seed=args.seed,
                          train_subset=args.train_subset, recipe=method.recipe(args))


def run(args: argparse.Namespace) -> int:
    device = device_from(args)
    if args.checkpoint and not args.checkpoint.endswith(".safetensors"):
        raise AdvlabError(f"--checkpoint must end in .safetensors, got {args.checkpoint}")
    config = defense_config(args)
    loss = METHODS[args.method].batch_loss(config)
    train_data, test_data = dataset_split(args, "train"), dataset_split(args, "test")
    with RunDir(args.out, "defend", {"train_config": config.to_dict(), "device": str(device)}) as run_dir:
        model, meta, path, cached = train_model(config, device, args.data_dir, batch_loss=loss, progress=args.progress,
                                                train_data=train_data, test_data=test_data, use_cache=not args.force)
        run_dir.metrics = {"checkpoint": str(path), "cached": cached, "recipe": config.recipe,
                           "test_accuracy": meta["test_accuracy"], "train_seconds": meta.get("train_seconds"),
                           "history": meta.get("history", [])}
        curve = training_curve_figure(meta["history"], run_dir.figure_path("training.png"),
                                      f"{config.model} on {config.dataset} ({args.method})")
        run_dir.add_section("Defended training", f"{config.model} on {config.dataset} with recipe {config.recipe}: "
                            f"clean test accuracy {meta['test_accuracy']:.4f} after {config.epochs} epochs "
                            f"({meta.get('train_seconds', 0):.0f} s on {meta.get('device')}). Training accuracy "
                            "is measured on the defended (e.g. noisy) inputs.",
                            figures=[(curve.name, "training loss and accuracy per epoch")])
        if args.checkpoint:
            shutil.copyfile(path, args.checkpoint)
        out = run_dir.commit()
    print(f"{'cached' if cached else 'trained'} {config.model} on {config.dataset} with {config.recipe}: clean test "
          f"accuracy {meta['test_accuracy']:.4f}\ncheckpoint: {args.checkpoint or path}\nrun folder: {out}")
    return 0
