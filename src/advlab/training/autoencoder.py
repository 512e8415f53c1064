"""Training autoencoders: squared reconstruction loss (plus the KL term for a VAE), cached by config.

The classifier trainer (advlab.training.fit) measures accuracy from logits; an autoencoder has no
classes, so this module runs its own short loop while reusing the trainer's optimizer, schedule,
seeding and checkpoint cache (the recipe {"method": "reconstruction"} keeps the hashes apart).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from advlab.data import ImageDataset
from advlab.errors import AdvlabError
from advlab.models import architecture
from advlab.training.cache import train_model
from advlab.training.resume import TrainingState, replay_schedule
from advlab.training.trainer import TrainConfig, make_optimizer, make_schedule

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


def fit_autoencoder(model: nn.Module, data: ImageDataset, config: TrainConfig, device: torch.device,
                    progress: bool = True, state: TrainingState | None = None) -> list[dict]:
    """Train in place; return per-epoch {epoch, loss, mse, lr} (mse: mean squared error per pixel;
    lr: the rate of the epoch's last step). With a TrainingState: resumable, as advlab.training.fit."""
    config.validate()
    generator = torch.Generator().manual_seed(config.seed)
    if config.train_subset:
        data = data.subset(torch.randperm(len(data), generator=generator)[: config.train_subset])
    model.to(device).train()
    optimizer = make_optimizer(model, config)
    steps_per_epoch = math.ceil(len(data) / config.batch_size)
    schedule = make_schedule(optimizer, config, config.epochs * steps_per_epoch)
    pixels = math.prod(data.shape)
    history: list[dict] = []
    first_epoch, seconds_before, began = 1, 0.0, time.perf_counter()
    saved = state.load() if state is not None else None
    if saved is not None:
        state.restore(saved, model, optimizer, generator, {})
        replay_schedule(schedule, saved["epoch"] * steps_per_epoch)
        history, seconds_before = list(saved["history"]), float(saved["seconds"])
        first_epoch, state.resumed_from = saved["epoch"] + 1, saved["epoch"]
        if progress:
            tqdm.write(f"resuming from epoch {saved['epoch']}/{config.epochs} (state in {state.path})")
    for epoch in range(first_epoch, config.epochs + 1):
        model.train()
        total = seen = 0.0
        bar = tqdm(data.batches(config.batch_size, shuffle=True, generator=generator, device=device),
                   total=steps_per_epoch, desc=f"epoch {epoch}/{config.epochs}", disable=not progress,
                   leave=False, unit="batch")
        for x, _ in bar:
            loss = reconstruction_loss(model, x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            lr = optimizer.param_groups[0]["lr"]  # read before the scheduler steps: past its end, onecycle goes below 0
            optimizer.step()
            schedule.step()
            if not math.isfinite(loss.item()):
                raise AdvlabError(f"training diverged (loss {loss.item()}) at epoch {epoch}; lower the learning rate")
            total += loss.item() * len(x)
            seen += len(x)
            bar.set_postfix(loss=f"{total / seen:.3f}")
        history.append({"epoch": epoch, "loss": total / seen, "mse": total / seen / pixels, "lr": lr})
        if state is not None:
            state.save(epoch=epoch, history=history, stopped=False, model=model, optimizer=optimizer,
                       generator=generator, parts={}, seconds=seconds_before + time.perf_counter() - began)
    if state is not None:
        state.seconds = seconds_before + time.perf_counter() - began
    return history


@torch.no_grad()
def reconstruction_mse(model: nn.Module, data: ImageDataset, device: torch.device, batch_size: int = 500) -> float:
    """Mean squared error per pixel of the (deterministic, eval-mode) reconstructions of data."""
    model.eval()
    total = 0.0
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
