"""advlab train: train a model with its data set's default recipe (or your overrides), cached by config."""

from __future__ import annotations

import argparse

from advlab.cli.common import add_training_args, run_training, training_config
from advlab.training import cross_entropy_loss


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
