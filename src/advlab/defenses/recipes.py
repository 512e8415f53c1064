"""The defense methods by name (`advlab defend --method NAME`): for each, the TrainConfig.recipe it
records (part of the cache key and of the checkpoint metadata), its own training defaults on MNIST
(where the papers train longer than a standard model) and the batch loss it trains with.

    options = DefenseOptions(eps=0.3)
    config = default_config("mnist", **METHODS["fast"].mnist_defaults, recipe=defense_recipe("fast", options))
    loss, epoch_end = defense_training("fast", config, options, train_data, test_data)
    train_model(config, batch_loss=loss, epoch_end=epoch_end, train_data=train_data, test_data=test_data)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from advlab.data import ImageDataset
from advlab.defenses.adversarial import (
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
from advlab.training import TrainConfig
from advlab.training.trainer import BatchLoss


@dataclass(frozen=True)
class DefenseOptions:
    """The settings of every method; each method reads its own (see Method.summary)."""

    eps: float = 0.3
    alpha: float = 0.5
    steps: int = 10
    step_size: float | None = None
    align_weight: float | None = None
    random_start: bool = False
    fgsm_start: str | None = None
    noise: float = 2.0
    eps_ramp: float | None = None
    stop_on_overfit: float | None = None
    temperature: float = 100.0
    sigma: float | None = None


@dataclass(frozen=True)
class TrainingData:
    """What a batch loss may need besides the config: the data, the device, progress bars."""

    train: ImageDataset
    test: ImageDataset
    device: torch.device | str = "cpu"
    data_dir: str | None = None
    progress: bool = True


@dataclass(frozen=True)
class Method:
    summary: str
    recipe: Callable[[DefenseOptions], dict]  # what the checkpoint records; keys the cache
    batch_loss: Callable[[TrainConfig, TrainingData], BatchLoss]  # built from the validated config
    mnist_defaults: dict = field(default_factory=dict)  # training options the paper's recipe changes
    note: str = ""


def _noise_recipe(o: DefenseOptions) -> dict:
    if o.sigma is None:
        raise AdvlabError("--method noise needs --sigma (the noise level you will certify at, e.g. 0.25)")
    return noise_recipe(o.sigma)


def _distill_loss(config: TrainConfig, data: TrainingData) -> BatchLoss:
    return distillation_loss(config, data.device, data.data_dir, progress=data.progress, train_data=data.train,
                             test_data=data.test)


def _adversarial(config: TrainConfig, data: TrainingData) -> BatchLoss:
    images = 0  # the training set's size, read only when the recipe needs it
    if config.recipe.get("eps_ramp_epochs") or config.recipe.get("start") == "carry":
        images = min(config.train_subset or math.inf, len(data.train))
    return adversarial_loss(config.recipe, config.seed, math.ceil(images / config.batch_size), images)


def _single_step(recipe: Callable[[DefenseOptions], dict]) -> Callable[[DefenseOptions], dict]:
    """A pgd/fast/nfgsm/gradalign recipe with the options every adversarial-training method shares."""
    return lambda o: with_overfitting_guard(with_eps_ramp(recipe(o), o.eps_ramp), o.stop_on_overfit)


ADVERSARIAL_NOTE = "Training accuracy is measured on the adversarial examples."
# Wong et al.'s MNIST epochs, peak lr and batch size, on the onecycle schedule: their own triangle
# (--schedule cyclic) keeps their small CNN clear of catastrophic overfitting but not mnist_cnn, which does
# best with SGD, weight decay, an eps warm-up and a carried start with a small step (docs/defenses.md); the
# defaults stay the paper's recipe
FAST_MNIST = {"epochs": 10, "lr": 5e-3, "batch_size": 100}
METHODS: dict[str, Method] = {
    "noise": Method("Gaussian noise augmentation at --sigma, the base model of randomized smoothing "
                    "(Cohen et al. 2019)", _noise_recipe,
                    lambda config, data: GaussianNoiseLoss(config.recipe["sigma"], seed=config.seed),
                    note="Training accuracy is measured on the noisy inputs."),
    "augment": Method("adversarial data augmentation: alpha * clean + (1 - alpha) * FGSM loss at --eps "
                      "(Goodfellow et al. 2015)", lambda o: augment_recipe(o.eps, o.alpha), _adversarial,
                      note=ADVERSARIAL_NOTE),
    "distill": Method("defensive distillation at --temperature (Papernot et al. 2016): a teacher and a "
                      "student trained at T, deployed at T = 1", lambda o: distill_recipe(o.temperature),
                      _distill_loss),
    "pgd": Method("PGD adversarial training at --eps with --steps steps (Madry et al. 2018)",
                  _single_step(lambda o: pgd_recipe(o.eps, o.steps, o.step_size)), _adversarial,
                  mnist_defaults={"epochs": 8}, note=ADVERSARIAL_NOTE),
    "fast": Method("fast adversarial training: one FGSM step from a random start, step 1.25 * eps "
                   "(Wong et al. 2020), or from the sample's previous epoch's perturbation (--fgsm-start carry)",
                   _single_step(lambda o: fast_recipe(o.eps, o.step_size, o.fgsm_start or "random")),
                   _adversarial, mnist_defaults=FAST_MNIST, note=ADVERSARIAL_NOTE),
    "nfgsm": Method("N-FGSM: one FGSM step of eps from a start of --noise * eps, no projection onto the eps-ball "
                    "(de Jorge et al. 2022)",
                    _single_step(lambda o: nfgsm_recipe(o.eps, o.step_size, o.noise)), _adversarial,
                    mnist_defaults=FAST_MNIST, note=ADVERSARIAL_NOTE),
    "gradalign": Method("FGSM training with the gradient-alignment penalty --align-weight * (1 - cos) between input "
                        "gradients at x and at a random point of the eps-ball (Andriushchenko & Flammarion 2020)",
                        _single_step(lambda o: gradalign_recipe(
                            o.eps, 1.0 if o.align_weight is None else o.align_weight, o.step_size, o.random_start)),
                        _adversarial, mnist_defaults=FAST_MNIST, note=ADVERSARIAL_NOTE),
}
SINGLE_STEP_OPTIONS = ("pgd", "fast", "nfgsm", "gradalign")  # the methods --eps-ramp and --stop-on-overfit apply to


def method_of(name: str) -> Method:
    if name not in METHODS:
        raise AdvlabError(f"unknown defense {name!r}; choose one of {', '.join(sorted(METHODS))}")
    return METHODS[name]


def defense_recipe(name: str, options: DefenseOptions) -> dict:
    """The recipe of method name with options (what the checkpoint records)."""
    return method_of(name).recipe(options)


def check_defense(name: str, options: DefenseOptions, config: TrainConfig) -> None:
    """Options given to a method that does not read them, and combinations that cannot work."""
    for flag, value in (("--stop-on-overfit", options.stop_on_overfit), ("--eps-ramp", options.eps_ramp)):
        if value is not None and name not in SINGLE_STEP_OPTIONS:
            names = ", ".join(SINGLE_STEP_OPTIONS[:-1]) + " and " + SINGLE_STEP_OPTIONS[-1]
            raise AdvlabError(f"{flag} applies to --method {names} only")
    if name != "gradalign" and (options.random_start or options.align_weight is not None):
        raise AdvlabError("--align-weight and --random-start apply to --method gradalign only")
    if options.fgsm_start is not None and name != "fast":
        raise AdvlabError("--fgsm-start applies to --method fast only")
    if config.recipe.get("start") == "carry" and config.augment:
        raise AdvlabError("--fgsm-start carry keeps each training image's perturbation, which random crops would "
                          "misalign; add --no-augment")


def defense_training(name: str, config: TrainConfig, options: DefenseOptions, data: TrainingData
                     ) -> tuple[BatchLoss, Callable | None]:
    """(batch loss, epoch_end hook or None) to train config (whose recipe is method name's) with."""
    check_defense(name, options, config)
    guard = overfitting_guard(config.recipe, data.train) if options.stop_on_overfit else None
    return method_of(name).batch_loss(config, data), guard
