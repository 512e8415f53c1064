"""Gaussian noise augmentation: train the base classifier of randomized smoothing.

Cohen et al. 2019 train f with cross-entropy on x + delta, delta ~ N(0, sigma^2 I), at
the sigma later used for certification, so that f classifies well under exactly the noise g
averages over. Noise is in [0, 1] pixel space, not clipped, and drawn afresh for every batch.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from advlab.errors import AdvlabError, check_range
from advlab.runtime import DeviceGenerator
from advlab.training import TrainConfig, default_config, train_model


class GaussianNoiseLoss:
    """A ``batch_loss`` for :func:`advlab.training.fit`: cross-entropy on x + sigma * N(0, I).

    The generator (seeded once, on the batch's device) makes training reproducible while every
    batch still gets fresh noise.
    """

    def __init__(self, sigma: float, seed: int = 0) -> None:
        self.sigma = check_range(sigma, "sigma", 0.0, 10.0, lo_open=True)
        self.seed = seed
        self._generator = DeviceGenerator(seed)

    def state_dict(self) -> dict:
        """The generator's state, for resumable training (advlab.training.resume)."""
        return {"generator": self._generator.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self._generator.load_state_dict(state["generator"])

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # empty_like keeps x's memory format (the trainer uses channels-last)
        noise = torch.empty_like(x).normal_(0.0, self.sigma, generator=self._generator.on(x.device))
        logits = model(x + noise)
        return F.cross_entropy(logits, y), logits


def noise_recipe(sigma: float) -> dict:
    """The TrainConfig.recipe of noise training: part of the cache key and the checkpoint metadata."""
    return {"method": "noise", "sigma": check_range(sigma, "sigma", 0.0, 10.0, lo_open=True)}


def noise_config(dataset: str, sigma: float, **overrides) -> TrainConfig:
    """The data set's default recipe with Gaussian noise augmentation at sigma."""
    return default_config(dataset, recipe=noise_recipe(sigma), **overrides)


def train_noise_model(config: TrainConfig, device: torch.device, data_dir: str | Path | None = None,
                      progress: bool = True, **kwargs) -> tuple[nn.Module, dict, Path, bool]:
    """Train (or take from the cache) the noise-augmented model config describes."""
    if config.recipe.get("method") != "noise" or "sigma" not in config.recipe:
        raise AdvlabError(f"config.recipe must be {{'method': 'noise', 'sigma': ...}}, got {config.recipe}")
    loss = GaussianNoiseLoss(config.recipe["sigma"], seed=config.seed)
    return train_model(config, device, data_dir, batch_loss=loss, progress=progress, **kwargs)
