"""Trained models cached under a hash of their full config: the same config trains once."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from advlab import __version__
from advlab.data import CANONICAL_FINGERPRINTS, ImageDataset, load_dataset
from advlab.errors import AdvlabError
from advlab.models import architecture, create_model, load_checkpoint, model_args, save_checkpoint
from advlab.models.inference import accuracy
from advlab.runtime import cache_dir, eval_mode, exclusive_lock, seed_everything
from advlab.training import distributed
from advlab.training.resume import TrainingState
from advlab.training.trainer import BatchLoss, EpochEnd, TrainConfig, cross_entropy_loss, fit

FitFn = Callable[[nn.Module, ImageDataset, TrainConfig, torch.device, bool], list[dict]]
TestMetrics = Callable[[nn.Module, ImageDataset, torch.device], dict]


def _test_accuracy(model: nn.Module, data: ImageDataset, device: torch.device) -> dict:
    return {"test_accuracy": accuracy(model, data, device)}


def data_identity(train_data: ImageDataset, test_data: ImageDataset) -> dict | None:
    """What the cache key records of the data: the fingerprints of the training and test sets, or None
    when both are the canonical MNIST (keys made before the data entered them name the same models)."""
    if (CANONICAL_FINGERPRINTS.get(train_data.name) == train_data.fingerprint
            and CANONICAL_FINGERPRINTS.get(test_data.name) == test_data.fingerprint
            and train_data.name.endswith("-train") and test_data.name.endswith("-test")):
        return None
    return {"train": train_data.fingerprint, "test": test_data.fingerprint}


def config_hash(config: TrainConfig, data: dict | None = None) -> str:
    """Hash of everything that changes the weights: the config, the data (data_identity) and the minor
    version that trained them."""
    fields = {**config.to_dict(), "version": __version__.rsplit(".", 1)[0]}
    if data is not None:
        fields["data"] = data
    blob = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cached_checkpoint_path(config: TrainConfig, train_data: ImageDataset | None = None,
                           test_data: ImageDataset | None = None, data_dir: str | Path | None = None) -> Path:
    """Where the model config describes, trained on this data, is cached (the data is loaded by
    config.dataset from data_dir when not given)."""
    train_data = train_data or load_dataset(config.dataset, "train", data_dir)
    test_data = test_data or load_dataset(config.dataset, "test", data_dir)
    digest = config_hash(config, data_identity(train_data, test_data))
    return cache_dir() / "models" / f"{config.model}-{_file_safe(config.dataset)}-{digest}.safetensors"


def _file_safe(name: str) -> str:
    """A data set name fit for a file name (folder:PATH names hold slashes)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")[:40] or "data"


def check_takes_images(model: nn.Module, name: str, data: ImageDataset) -> None:
    """Refuse, before training, an architecture that cannot take the data's images (e.g. LeNet's two
    5x5 convolutions and poolings on 8x8 images): one forward pass on a blank image."""
    try:
        with torch.no_grad(), eval_mode(model):
            model(torch.zeros((1, *data.shape)))
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AdvlabError(f"{name} cannot take {data.name}'s {'x'.join(map(str, data.shape))} images ({first}); "
                          "choose a larger --image-size or another --model") from None


def train_model(config: TrainConfig, device: torch.device, data_dir: str | Path | None = None,
                batch_loss: BatchLoss = cross_entropy_loss, progress: bool = True,
                train_data: ImageDataset | None = None, test_data: ImageDataset | None = None,
                use_cache: bool = True, fit_fn: FitFn | None = None,
                test_metrics: TestMetrics | None = None,
                epoch_end: EpochEnd | None = None, resumable: bool = True,
                compile: bool = False) -> tuple[nn.Module, dict, Path, bool]:
    """Train (or fetch from the cache) the model config describes, on train_data (default: config.dataset
    from data_dir).

    Returns (model, metadata, checkpoint path, whether it came from the cache). The metadata holds
    the config, the data used (name, source, fingerprint), the per-epoch history, the test metrics
    (clean accuracy by default) and the wall time. Models other than classifiers bring their own
    loop (fit_fn) and test metrics. The cache key covers the config and the data's fingerprints. A
    cached file that cannot be read is trained again. With resumable (the default), training writes
    its state after every epoch next to the cache entry and a killed run resumes from it when the
    same call is made again; one process at a time trains a given entry. ``compile`` (torch.compile)
    changes the speed, not the recipe, so it is not part of the cache key.
    """
    config.validate()
    if fit_fn is None and architecture(config.model).kind != "classifier":
        raise AdvlabError(f"{config.model} is an {architecture(config.model).kind}, not a classifier; train it with "
                          "advlab autoencoder (or advlab.training.autoencoder.train_autoencoder)")
    device = distributed.local_device(device)
    train_data = train_data or load_dataset(config.dataset, "train", data_dir)
    test_data = test_data or load_dataset(config.dataset, "test", data_dir)
    config.steps(len(train_data))  # an empty training set is refused before anything is built
    data = data_identity(train_data, test_data)
    path = cached_checkpoint_path(config, train_data, test_data)
    if use_cache and path.is_file():
        try:
            model, meta = load_checkpoint(path, device)
            return model, meta, path, True
        except AdvlabError as exc:  # the cache is advlab's own: a damaged entry is rebuilt, not trusted
            print(f"advlab: the cached model {path} is unreadable ({exc}); training it again", file=sys.stderr)
    seed_everything(config.seed)
    channels, size = train_data.shape[0], train_data.shape[1]
    model = create_model(config.model, config.dataset, channels, size, train_data.num_classes, **config.model_extra)
    check_takes_images(model, config.model, train_data)
    state = TrainingState(path.with_name(path.stem + ".state.safetensors"), path.stem) if resumable else None
    lock = path.with_name(path.stem + ".lock")
    busy = (f"another advlab process is training this same model now (lock {lock}); wait for it to finish and "
            "run again (it will then come from the cache)")
    main = distributed.context().is_main
    with exclusive_lock(lock, busy) if main else contextlib.nullcontext():
        start = time.perf_counter()
        if fit_fn is None:
            history = fit(model, train_data, config, device, batch_loss, progress, epoch_end, state=state,
                          compile=compile)
        else:
            history = fit_fn(model, train_data, config, device, progress, **({"state": state} if state else {}))
        wall = state.seconds if state is not None else time.perf_counter() - start
        meta = {
            "architecture": config.model,
            "model_args": model_args(config.dataset, channels, size, train_data.num_classes, **config.model_extra),
            "dataset": config.dataset,
            "classes": train_data.classes,
            "input_shape": list(train_data.shape),
            "train_config": config.to_dict(),
            "recipe": config.recipe,
            "data": {"train": train_data.describe(), "test": test_data.describe()},
            "history": history,
            **(test_metrics or _test_accuracy)(model, test_data, device),
            "train_seconds": wall,
            "device": str(device),
            "processes": distributed.context().world_size,
            "config_hash": config_hash(config, data),
        }
        if state is not None and state.resumed_from is not None:
            meta["resumed_after_epoch"] = state.resumed_from
        if main:  # one writer; the others wait until the checkpoint is there
            save_checkpoint(path, model, meta)
            if state is not None:
                state.clear()
    distributed.barrier()
    return model, meta, path, False
