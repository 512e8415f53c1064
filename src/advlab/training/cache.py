"""Trained models cached under a hash of their full config: the same config trains once."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from advlab import __version__
from advlab.data import ImageDataset, load_dataset
from advlab.models import create_model, load_checkpoint, model_args, save_checkpoint
from advlab.models.inference import accuracy
from advlab.runtime import cache_dir, seed_everything
from advlab.training import distributed
from advlab.training.trainer import BatchLoss, EpochEnd, TrainConfig, cross_entropy_loss, fit

FitFn = Callable[[nn.Module, ImageDataset, TrainConfig, torch.device, bool], list[dict]]
TestMetrics = Callable[[nn.Module, ImageDataset, torch.device], dict]


def _test_accuracy(model: nn.Module, data: ImageDataset, device: torch.device) -> dict:
    return {"test_accuracy": accuracy(model, data, device)}


def config_hash(config: TrainConfig) -> str:
    """Hash of everything that changes the weights (and the minor version that trained them)."""
    blob = json.dumps({**config.to_dict(), "version": __version__.rsplit(".", 1)[0]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cached_checkpoint_path(config: TrainConfig) -> Path:
    return cache_dir() / "models" / f"{config.model}-{config.dataset}-{config_hash(config)}.safetensors"


def train_model(config: TrainConfig, device: torch.device, data_dir: str | Path | None = None,
                batch_loss: BatchLoss = cross_entropy_loss, progress: bool = True,
                train_data: ImageDataset | None = None, test_data: ImageDataset | None = None,
                use_cache: bool = True, fit_fn: FitFn | None = None,
                test_metrics: TestMetrics | None = None,
                epoch_end: EpochEnd | None = None, compile: bool = False) -> tuple[nn.Module, dict, Path, bool]:
    """Train (or fetch from the cache) the model config describes.

    Returns (model, metadata, checkpoint path, whether it came from the cache). The metadata holds
    the config, the per-epoch history, the test metrics (clean accuracy by default) and the wall
    time. Models other than classifiers bring their own loop (fit_fn) and test metrics. ``compile``
    (torch.compile) changes the speed, not the recipe, so it is not part of the cache key.
    """
    config.validate()
    device = distributed.local_device(device)
    path = cached_checkpoint_path(config)
    if use_cache and path.is_file():
        model, meta = load_checkpoint(path, device)
        return model, meta, path, True
    train_data = train_data or load_dataset(config.dataset, "train", data_dir)
    test_data = test_data or load_dataset(config.dataset, "test", data_dir)
    seed_everything(config.seed)
    channels, size = train_data.shape[0], train_data.shape[1]
    model = create_model(config.model, config.dataset, channels, size, train_data.num_classes, **config.model_extra)
    start = time.perf_counter()
    if fit_fn is None:
        history = fit(model, train_data, config, device, batch_loss, progress, epoch_end, compile=compile)
    else:
        history = fit_fn(model, train_data, config, device, progress)
    wall = time.perf_counter() - start
    meta = {
        "architecture": config.model,
        "model_args": model_args(config.dataset, channels, size, train_data.num_classes, **config.model_extra),
        "dataset": config.dataset,
        "classes": train_data.classes,
        "input_shape": list(train_data.shape),
        "train_config": config.to_dict(),
        "recipe": config.recipe,
        "history": history,
        **(test_metrics or _test_accuracy)(model, test_data, device),
        "train_seconds": wall,
        "device": str(device),
        "processes": distributed.context().world_size,
        "config_hash": config_hash(config),
    }
    if distributed.context().is_main:  # one writer; the others wait until the checkpoint is there
        save_checkpoint(path, model, meta)
    distributed.barrier()
    return model, meta, path, False

