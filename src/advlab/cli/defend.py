"""advlab defend: train a model with a defense recipe; the result is an ordinary (cached) checkpoint.

The methods are advlab.defenses.recipes.METHODS (each one's recipe, MNIST defaults and batch loss).
"""

from __future__ import annotations

import argparse
from dataclasses import fields

from advlab.cli.common import (
    add_training_args,
    dataset_split,
    device_from,
    nonnegative_float,
    positive_float,
    positive_int,
    probability,
    run_training,
    training_config,
)
from advlab.defenses.adversarial import FAST_STARTS
from advlab.defenses.recipes import METHODS, DefenseOptions, TrainingData, defense_recipe, defense_training
from advlab.training import TrainConfig, distributed


def add_parser(sub: argparse._SubParsersAction) -> None:
    methods = "; ".join(f"{name}: {m.summary}" for name, m in METHODS.items())
    p = sub.add_parser("defend", help="train a model with a defense (cached like advlab train)",
                       description=f"Train a classifier with a defense recipe. Methods: {methods}. The checkpoint "
                       "records the recipe; unset training options take the method's and the data set's defaults "
                       "(on MNIST: pgd 8 epochs; fast, nfgsm and gradalign 10 epochs, peak lr 5e-3, batch 100, as "
                       "Wong et al.; their triangular schedule is --schedule cyclic; docs/defenses.md compares "
                       "recipes). Runs unchanged under torchrun, like advlab train.")
    p.add_argument("--method", required=True, choices=sorted(METHODS), help="the defense")
    p.add_argument("--eps", type=nonnegative_float(), default=0.3,
                   help="augment/pgd/fast/nfgsm/gradalign: L-inf radius on the [0, 1] scale (default 0.3)")
    p.add_argument("--alpha", type=probability, default=0.5, help="augment: weight of the clean loss (default 0.5)")
    p.add_argument("--steps", type=positive_int, default=10, help="pgd: attack steps per training batch (default 10)")
    p.add_argument("--step-size", type=positive_float(), default=None,
                   help="pgd: default 2.5 * eps / steps; fast: default 1.25 * eps; nfgsm and gradalign: default eps")
    p.add_argument("--align-weight", type=nonnegative_float(), default=None, metavar="LAMBDA",
                   help="gradalign: weight of the gradient-alignment penalty (default 1.0)")
    p.add_argument("--random-start", action="store_true",
                   help="gradalign: take the FGSM step from a uniform random start in the ball (default: from x)")
    p.add_argument("--fgsm-start", choices=FAST_STARTS, default=None,  # not --start: torchrun claims its prefixes
                   help="fast: where each FGSM step starts: random (default; uniform in the ball, Wong et al.) or "
                   "carry (where the sample's step of the previous epoch ended, ATTA: Zheng et al. 2020; needs "
                   "unaugmented training images)")
    p.add_argument("--noise", type=nonnegative_float(), default=2.0,
                   help="nfgsm: the random start is uniform in the ball of NOISE * eps (default 2)")
    p.add_argument("--eps-ramp", type=nonnegative_float(), default=None, metavar="EPOCHS",
                   help="pgd/fast/nfgsm/gradalign: grow eps (and the step) linearly from 0 over the first EPOCHS "
                   "epochs")
    p.add_argument("--stop-on-overfit", type=probability, default=None, metavar="DROP",
                   help="pgd/fast/nfgsm/gradalign: after each epoch, PGD-10 accuracy on 512 training images; stop and "
                   "restore the best epoch once it falls more than DROP (e.g. 0.2) below the best "
                   "(catastrophic overfitting)")
    p.add_argument("--temperature", type=positive_float(), default=100.0,
                   help="distill: softmax temperature T (default 100)")
    p.add_argument("--sigma", type=positive_float(), default=None,
                   help="noise: Gaussian noise level on the [0, 1] pixel scale")
    add_training_args(p)
    p.set_defaults(func=run)


def defense_options(args: argparse.Namespace) -> DefenseOptions:
    return DefenseOptions(**{f.name: getattr(args, f.name) for f in fields(DefenseOptions)})


def defense_config(args: argparse.Namespace) -> TrainConfig:
    defaults = METHODS[args.method].mnist_defaults if args.dataset == "mnist" else {}
    return training_config(args, defaults=defaults, recipe=defense_recipe(args.method, defense_options(args)))


def run(args: argparse.Namespace) -> int:
    config = defense_config(args)
    device = device_from(args)
    distributed.init_distributed(device)  # before any training (the distillation teacher)
    data = TrainingData(dataset_split(args, "train"), dataset_split(args, "test"), device, args.data_dir,
                        args.progress)
    loss, guard = defense_training(args.method, config, defense_options(args), data)
    return run_training(args, config, loss, "defend", "Defended training", METHODS[args.method].note,
                        epoch_end=guard)
