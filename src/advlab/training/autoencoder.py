"""Training autoencoders: squared reconstruction loss (plus the KL term for a VAE), cached by config.

Autoencoders train through the one trainer (advlab.training.fit) with a batch loss that returns no
logits (an autoencoder has no classes, so no accuracy is recorded) and the checkpoint cache (the
recipe {"method": "reconstruction"} keeps the hashes apart).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from advlab.data import ImageDataset
from advlab.errors import AdvlabError
from advlab.models import architecture
from advlab.runtime import eval_mode
from advlab.training.cache import train_model
from advlab.training.resume import TrainingState
from advlab.training.trainer import TrainConfig, fit

RECIPE = {"method": "reconstruction"}

AUTOENCODER_DEFAULTS = {
    "mnist": {"epochs": 5, "batch_size": 128, "optimizer": "adam", "lr": 2e-3, "schedule": "onecycle"},
    "cifar10": {"epochs": 10, "batch_size": 128, "optimizer": "adam", "lr": 2e-3, "schedule": "onecycle"},
}


def autoencoder_config(dataset: str = "mnist", model: str = "conv_autoencoder", **overrides) -> TrainConfig:
    """The recipe for an autoencoder on a data set (Adam, one-cycle), with overrides applied."""
    if architecture(model).kind != "autoencoder":
        raise AdvlabError(f"{model!r} is not an autoencoder; choose conv_autoencoder or conv_vae")
    base = AUTOENCODER_DEFAULTS["mnist" if dataset == "mnist" else "cifar10"]
    fields = {**base, "model": model, "dataset": dataset, "augment": False, "recipe": dict(RECIPE),
              **{k: v for k, v in overrides.items() if v is not None}}
    return TrainConfig(**fields).validate()


def reconstruction_loss(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Per-image summed squared error, averaged over the batch; a VAE adds its KL divergence to
    N(0, I) (the negative ELBO of Kingma & Welling 2014, eq. 10, with a Gaussian decoder)."""
    if hasattr(model, "encode_stats"):
        mu, log_var = model.encode_stats(x)
        z = mu + torch.randn_like(mu) * (0.5 * log_var).exp() if model.training else mu
        recon = model.decode(z)
        kl = -0.5 * (1 + log_var - mu.pow(2) - log_var.exp()).sum(1)
        return ((recon - x).pow(2).flatten(1).sum(1) + kl).mean()
    return (model(x) - x).pow(2).flatten(1).sum(1).mean()


def reconstruction_batch_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, None]:
    """reconstruction_loss as a batch loss for the one trainer (advlab.training.fit): no logits, no
    accuracy; the labels are unused."""
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    if inner is not model and hasattr(inner, "encode_stats"):
        raise AdvlabError("a VAE trains in one process (its loss needs the encoder's statistics); run it without "
                          "torchrun")
    return reconstruction_loss(model, x), None


def fit_autoencoder(model: nn.Module, data: ImageDataset, config: TrainConfig, device: torch.device,
                    progress: bool = True, state: TrainingState | None = None) -> list[dict]:
    """Train in place through the one trainer (advlab.training.fit: order, schedule, seeds, resumable
    state); return per-epoch {epoch, loss, lr, mse} (mse: mean squared error per pixel; lr: the rate
    of the epoch's last step)."""
    pixels = math.prod(data.shape)

    def add_mse(model: nn.Module, epoch: int, record: dict) -> bool:
        record["mse"] = record["loss"] / pixels
        return False

    return fit(model, data, config, device, reconstruction_batch_loss, progress, epoch_end=add_mse, state=state)


@torch.no_grad()
def reconstruction_mse(model: nn.Module, data: ImageDataset, device: torch.device, batch_size: int = 500) -> float:
    """Mean squared error per pixel of the (deterministic, eval-mode) reconstructions of data."""
    total = 0.0
    with eval_mode(model):
        for x, _ in data.batches(batch_size, device=device):
            total += (model(x) - x).pow(2).sum().item()
    return total / (len(data) * math.prod(data.shape))


def train_autoencoder(config: TrainConfig, device: torch.device, data_dir: str | Path | None = None,
                      progress: bool = True, train_data: ImageDataset | None = None,
                      test_data: ImageDataset | None = None,
                      use_cache: bool = True) -> tuple[nn.Module, dict, Path, bool]:
    """Train (or fetch from the cache) the autoencoder config describes; train_model with this
    module's loop. Returns (model in eval mode, metadata with the test reconstruction MSE, path,
    from cache)."""
    model, meta, path, cached = train_model(
        config, device, data_dir, progress=progress, train_data=train_data, test_data=test_data,
        use_cache=use_cache, fit_fn=fit_autoencoder,
        test_metrics=lambda model, data, device: {"test_mse": reconstruction_mse(model, data, device)})
    return model.eval(), meta, path, cached
