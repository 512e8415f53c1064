"""advlab defend: train a model with a defense recipe; the result is an ordinary (cached) checkpoint.

Each method is one entry of METHODS: its options, the TrainConfig.recipe it records (part of the
cache key and of the checkpoint metadata) and the batch loss it trains with. Adding a method
(augmentation, distillation, adversarial training) means adding one entry.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from advlab.cli.common import add_training_args, training_config
from advlab.cli.train import run_training
from advlab.defenses.noise import GaussianNoiseLoss, noise_recipe
from advlab.errors import AdvlabError
from advlab.training import TrainConfig
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
                       "records the recipe; unset training options take the data set's default recipe. Runs "
                       "unchanged under torchrun, like advlab train.")
    p.add_argument("--method", required=True, choices=sorted(METHODS), help="the defense")
    p.add_argument("--sigma", type=float, default=None, help="noise: Gaussian noise level on the [0, 1] pixel scale")
    add_training_args(p)
    p.set_defaults(func=run)


def defense_config(args: argparse.Namespace) -> TrainConfig:
    return training_config(args, recipe=METHODS[args.method].recipe(args))


def run(args: argparse.Namespace) -> int:
    config = defense_config(args)
    return run_training(args, config, METHODS[args.method].batch_loss(config), "defend", "Defended training",
                        "Training accuracy is measured on the defended (e.g. noisy) inputs.")
