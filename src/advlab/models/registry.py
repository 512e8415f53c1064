"""Architectures by name. ``create_model("mnist_cnn", "mnist")`` builds an untrained model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from advlab.errors import AdvlabError
from advlab.models import classifiers
from advlab.models.autoencoder import ConvAutoencoder, VariationalAutoencoder
from advlab.models.layers import normalization_for


@dataclass(frozen=True)
class Architecture:
    build: Callable[..., nn.Module]
    kind: str  # "classifier" or "autoencoder"
    summary: str


ARCHITECTURES: dict[str, Architecture] = {
    "mnist_cnn": Architecture(classifiers.mnist_cnn, "classifier", "Madry et al. 2018 MNIST CNN (3.3M params)"),
    "small_cnn": Architecture(classifiers.small_cnn, "classifier",
                              "Wong et al. 2020 small MNIST CNN, strided convolutions (0.17M params)"),
    "lenet": Architecture(classifiers.lenet, "classifier", "LeNet-style small CNN (44k params)"),
    "mlp": Architecture(classifiers.mlp, "classifier", "fully connected 200-200 (Papernot et al. 2017 substitute)"),
    "linear": Architecture(classifiers.linear, "classifier", "softmax regression"),
    "cifar_cnn": Architecture(classifiers.cifar_cnn, "classifier", "VGG-style CNN with batch norm (0.29M params)"),
    "preact_resnet18": Architecture(classifiers.PreActResNet18, "classifier", "PreAct ResNet-18 (11M params)"),
    "conv_autoencoder": Architecture(ConvAutoencoder, "autoencoder", "convolutional autoencoder"),
    "conv_vae": Architecture(VariationalAutoencoder, "autoencoder", "convolutional variational autoencoder"),
}


def architecture(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise AdvlabError(f"unknown model {name!r}; choose one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def model_args(dataset: str, channels: int, size: int, num_classes: int, **extra) -> dict:
    """The full argument set that rebuilds a model; stored in every checkpoint."""
    mean, std = normalization_for(dataset, channels)
    return {"channels": channels, "size": size, "num_classes": num_classes, "mean": list(mean),
            "std": list(std), **extra}


def build_model(name: str, args: dict) -> nn.Module:
    """Build architecture `name` from a stored argument dict (see model_args)."""
    spec = architecture(name)
    args = dict(args)
    args["mean"], args["std"] = tuple(args["mean"]), tuple(args["std"])
    if "hidden" in args:
        args["hidden"] = tuple(args["hidden"])
    try:
        return spec.build(**args)
    except TypeError as exc:
        raise AdvlabError(f"model {name!r} does not take arguments {sorted(args)} ({exc})") from None


def create_model(name: str, dataset: str = "mnist", channels: int | None = None, size: int | None = None,
                 num_classes: int = 10, **extra) -> nn.Module:
    """An untrained model for a data set (shape taken from the data set name unless given)."""
    if channels is None or size is None:
        from advlab.data import dataset_info

        channels, size, _, num_classes = dataset_info(dataset)
    return build_model(name, model_args(dataset, channels, size, num_classes, **extra))
