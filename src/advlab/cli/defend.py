"""advlab defend: train a model with a defense recipe; the result is an ordinary (cached) checkpoint.

Each method is one entry of METHODS: its options, the TrainConfig.recipe it records (part of the
cache key and of the checkpoint metadata), its own training defaults on MNIST (where the papers
train longer than a standard model) and the batch loss it trains with.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass, field

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
from advlab.defenses.adversarial import (
    FAST_STARTS,
    adversarial_loss,
    augment_recipe,
    fast_recipe,
    gradalign_recipe,
    nfgsm_recipe,
    overfitting_guard,
    pgd_recipe,
    with_eps_ramp,
    with_overfitting_guard,
)
from advlab.defenses.distillation import distill_recipe, distillation_loss
from advlab.defenses.noise import GaussianNoiseLoss, noise_recipe
from advlab.errors import AdvlabError
from advlab.training import TrainConfig, distributed
from advlab.training.trainer import BatchLoss


@dataclass(frozen=True)
class Method:
    summary: str
    recipe: Callable[[argparse.Namespace], dict]  # what the checkpoint records; keys the cache
    batch_loss: Callable[[TrainConfig, argparse.Namespace], BatchLoss]  # built from the validated config
    mnist_defaults: dict = field(default_factory=dict)  # training options the paper's recipe changes
    note: str = ""


def _noise_recipe(args: argparse.Namespace) -> dict:
    if args.sigma is None:
        raise AdvlabError("--method noise needs --sigma (the noise level you will certify at, e.g. 0.25)")
    return noise_recipe(args.sigma)


def _distill_loss(config: TrainConfig, args: argparse.Namespace) -> BatchLoss:
    return distillation_loss(config, device_from(args), args.data_dir, progress=args.progress,
                             train_data=dataset_split(args, "train"), test_data=dataset_split(args, "test"))


def _adversarial(config: TrainConfig, args: argparse.Namespace) -> BatchLoss:
    images = 0  # the training set's size, read only when the recipe needs it
    if config.recipe.get("eps_ramp_epochs") or config.recipe.get("start") == "carry":
        images = min(config.train_subset or math.inf, len(dataset_split(args, "train")))
    return adversarial_loss(config.recipe, config.seed, math.ceil(images / config.batch_size), images)


def _single_step(recipe: Callable[[argparse.Namespace], dict]) -> Callable[[argparse.Namespace], dict]:
    """A pgd/fast/nfgsm/gradalign recipe with the options every adversarial-training method shares."""
    return lambda args: with_overfitting_guard(with_eps_ramp(recipe(args), args.eps_ramp), args.stop_on_overfit)


ADVERSARIAL_NOTE = "Training accuracy is measured on the adversarial examples."
# Wong et al.'s MNIST epochs, peak lr and batch size, on the onecycle schedule: their own triangle
# (--schedule cyclic) keeps their small CNN clear of catastrophic overfitting but not mnist_cnn, which does
# best with SGD, weight decay, an eps warm-up and a carried start with a small step (docs/defenses.md); the
# defaults stay the paper's recipe
FAST_MNIST = {"epochs": 10, "lr": 5e-3, "batch_size": 100}
METHODS: dict[str, Method] = {
    "noise": Method("Gaussian noise augmentation at --sigma, the base model of randomized smoothing "
                    "(Cohen et al. 2019)", _noise_recipe,
                    lambda config, args: GaussianNoiseLoss(config.recipe["sigma"], seed=config.seed),
                    note="Training accuracy is measured on the noisy inputs."),
    "augment": Method("adversarial data augmentation: alpha * clean + (1 - alpha) * FGSM loss at --eps "
                      "(Goodfellow et al. 2015)", lambda args: augment_recipe(args.eps, args.alpha), _adversarial,
                      note=ADVERSARIAL_NOTE),
    "distill": Method("defensive distillation at --temperature (Papernot et al. 2016): a teacher and a "
                      "student trained at T, deployed at T = 1", lambda args: distill_recipe(args.temperature),
                      _distill_loss),
    "pgd": Method("PGD adversarial training at --eps with --steps steps (Madry et al. 2018)",
                  _single_step(lambda args: pgd_recipe(args.eps, args.steps, args.step_size)), _adversarial,
                  mnist_defaults={"epochs": 8}, note=ADVERSARIAL_NOTE),
    "fast": Method("fast adversarial training: one FGSM step from a random start, step 1.25 * eps "
                   "(Wong et al. 2020), or from the sample's previous epoch's perturbation (--fgsm-start carry)",
                   _single_step(lambda args: fast_recipe(args.eps, args.step_size, args.fgsm_start or "random")),
                   _adversarial, mnist_defaults=FAST_MNIST, note=ADVERSARIAL_NOTE),
    "nfgsm": Method("N-FGSM: one FGSM step of eps from a start of --noise * eps, no projection onto the eps-ball "
                    "(de Jorge et al. 2022)",
                    _single_step(lambda args: nfgsm_recipe(args.eps, args.step_size, args.noise)), _adversarial,
                    mnist_defaults=FAST_MNIST, note=ADVERSARIAL_NOTE),
    "gradalign": Method("FGSM training with the gradient-alignment penalty --align-weight * (1 - cos) between input "
                        "gradients at x and at a random point of the eps-ball (Andriushchenko & Flammarion 2020)",
                        _single_step(lambda args: gradalign_recipe(
                            args.eps, 1.0 if args.align_weight is None else args.align_weight, args.step_size,
                            args.random_start)),
                        _adversarial, mnist_defaults=FAST_MNIST, note=ADVERSARIAL_NOTE),
}
SINGLE_STEP_OPTIONS = ("pgd", "fast", "nfgsm", "gradalign")  # the methods --eps-ramp and --stop-on-overfit apply to


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


def defense_config(args: argparse.Namespace) -> TrainConfig:
    method = METHODS[args.method]
    defaults = method.mnist_defaults if args.dataset == "mnist" else {}
    return training_config(args, defaults=defaults, recipe=method.recipe(args))


def run(args: argparse.Namespace) -> int:
    config = defense_config(args)
    distributed.init_distributed(device_from(args))  # before any training (the distillation teacher)
    method = METHODS[args.method]
    for flag, value in (("--stop-on-overfit", args.stop_on_overfit), ("--eps-ramp", args.eps_ramp)):
        if value is not None and args.method not in SINGLE_STEP_OPTIONS:
            names = ", ".join(SINGLE_STEP_OPTIONS[:-1]) + " and " + SINGLE_STEP_OPTIONS[-1]
            raise AdvlabError(f"{flag} applies to --method {names} only")
    if args.method != "gradalign" and (args.random_start or args.align_weight is not None):
        raise AdvlabError("--align-weight and --random-start apply to --method gradalign only")
    if args.fgsm_start is not None and args.method != "fast":
        raise AdvlabError("--fgsm-start applies to --method fast only")
    if config.recipe.get("start") == "carry" and config.augment:
        raise AdvlabError("--fgsm-start carry keeps each training image's perturbation, which random crops would "
                          "misalign; add --no-augment")
    guard = overfitting_guard(config.recipe, dataset_split(args, "train")) if args.stop_on_overfit else None
    return run_training(args, config, method.batch_loss(config, args), "defend", "Defended training", method.note,
                        epoch_end=guard)
