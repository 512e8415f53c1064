"""One trainer for every model and recipe: loop, schedules, seeds, devices, progress.

Defenses plug in through ``batch_loss``: a function (model, x, y) -> (loss, logits) that may
perturb x first (adversarial training, noise augmentation) or change the targets (distillation).
Models without classes (the autoencoders, advlab.training.autoencoder) return logits None: the
epochs then record no accuracy.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from advlab.data import ImageDataset
from advlab.errors import AdvlabError, check_range
from advlab.runtime import autocast, check_precision, compile_model, place_images
from advlab.training import distributed
from advlab.training.resume import TrainingState, replay_schedule, stateful_parts

# a batch loss with a true `takes_index` attribute is also given the batch's sample indices (index=...)
BatchLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
# called after each epoch with (model, epoch, that epoch's history record); may add to the record,
# may change the weights (e.g. restore an earlier epoch's); returns True to stop training
EpochEnd = Callable[[nn.Module, int, dict], bool]

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("onecycle", "cyclic", "cosine", "step", "constant")


@dataclass
class TrainConfig:
    """Everything that determines a trained model; its hash names the cached checkpoint."""

    model: str = "mnist_cnn"
    dataset: str = "mnist"
    epochs: int = 3
    batch_size: int = 128
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "onecycle"
    augment: bool = False
    seed: int = 0
    train_subset: int | None = None
    model_extra: dict = field(default_factory=dict)
    recipe: dict = field(default_factory=lambda: {"method": "standard"})
    precision: str = "fp32"  # "bf16": autocast forward passes (changes the weights, so it is part of the key)

    def validate(self) -> TrainConfig:
        if self.optimizer not in OPTIMIZERS:
            raise AdvlabError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise AdvlabError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if int(self.epochs) != self.epochs or self.epochs < 1:
            raise AdvlabError(f"epochs must be a positive integer, got {self.epochs}")
        if self.batch_size < 1:
            raise AdvlabError(f"batch size must be positive, got {self.batch_size}")
        check_range(self.lr, "learning rate", 0.0, 10.0, lo_open=True)
        check_range(self.weight_decay, "weight decay", 0.0, 1.0)
        check_range(self.momentum, "momentum", 0.0, 1.0)
        if isinstance(self.seed, bool) or int(self.seed) != self.seed or not 0 <= self.seed < 2**63:
            raise AdvlabError(f"seed must be an integer in 0..2**63-1, got {self.seed}")
        if self.train_subset is not None and self.train_subset < 1:
            raise AdvlabError(f"train subset must be positive, got {self.train_subset}")
        check_precision(self.precision)
        return self

    def steps(self, train_images: int) -> int:
        """Optimizer steps in the whole run on a training set of train_images images."""
        images = min(self.train_subset or train_images, train_images)
        if images < 1:
            raise AdvlabError("the training set is empty")
        return self.epochs * math.ceil(images / self.batch_size)

    def to_dict(self) -> dict:
        """The config as recorded and hashed; fp32, the default, is left out, so configs written before
        the precision option existed keep their hashes (and their cached models)."""
        record = asdict(self)
        if record["precision"] == "fp32":
            del record["precision"]
        return record


# Recipes that reach the documented accuracies (docs/training.md); flags override any field.
DEFAULTS = {
    "mnist": {"model": "mnist_cnn", "epochs": 3, "batch_size": 128, "optimizer": "adam", "lr": 1e-3,
              "schedule": "onecycle", "augment": False},
    "cifar10": {"model": "cifar_cnn", "epochs": 30, "batch_size": 128, "optimizer": "sgd", "lr": 0.05,
                "momentum": 0.9, "weight_decay": 5e-4, "schedule": "onecycle", "augment": True},
}


def default_config(dataset: str, **overrides) -> TrainConfig:
    """The data set's default recipe (a user folder gets CIFAR-10's), with overrides applied."""
    base = DEFAULTS["mnist" if dataset == "mnist" else "cifar10"]
    fields = {**base, "dataset": dataset, **{k: v for k, v in overrides.items() if v is not None}}
    return TrainConfig(**fields).validate()


def cross_entropy_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits = model(x)
    return F.cross_entropy(logits, y), logits


def random_crop_flip(x: torch.Tensor, generator: torch.Generator | None = None, pad: int = 4) -> torch.Tensor:
    """The standard CIFAR augmentation, batched: random crop after zero padding, horizontal flip."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    flip = torch.rand(n, generator=generator).to(x.device) < 0.5
    cols = torch.where(flip[:, None, None, None], cols.flip(-1), cols)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay, nesterov=config.momentum > 0)
    return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def make_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig, steps: int):
    """A per-step learning-rate schedule; onecycle is the fast default (Smith & Topin 2019: peak at 25%,
    momentum cycled too); cyclic is the triangle of Wong et al.'s fast adversarial training code
    (peak at 40%, the optimizer's momentum left alone)."""
    if steps < 1:
        raise AdvlabError(f"a learning-rate schedule needs at least one step, got {steps}")
    if config.schedule == "onecycle":
        # OneCycleLR ends its warm-up at step pct_start * steps - 1: at 4 steps that is step 0, a
        # phase of length 0 it divides by; runs that short have no warm-up step (as at 1-3 steps), so
        # the warm-up is put before step 0 there; every other length keeps the 25% warm-up
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=steps,
                                                   pct_start=0.25 if steps != 4 else 0.2, anneal_strategy="linear")
    if config.schedule == "cyclic":  # Wong et al. 2020's: linear from 0 up to lr at 40% of training, down to 0
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: float(np.interp(s + 1, [0, 0.4 * steps, steps],
                                                                                       [0.0, 1.0, 0.0])))
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    if config.schedule == "step":  # x0.1 at 50% and 75% of training
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, [steps // 2, 3 * steps // 4], 0.1)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)


def check_finite(total_loss: torch.Tensor, epoch: int) -> None:
    """A NaN or infinite loss makes every later step meaningless: stop with what to change."""
    value = total_loss.item()
    if not math.isfinite(value):
        raise AdvlabError(f"training diverged (loss {value}) at epoch {epoch}; lower the learning rate")


def fit(model: nn.Module, data: ImageDataset, config: TrainConfig, device: torch.device,
        batch_loss: BatchLoss = cross_entropy_loss, progress: bool = True,
        epoch_end: EpochEnd | None = None, state: TrainingState | None = None, compile: bool = False
        ) -> list[dict]:
    """Train model in place on data; return per-epoch {epoch, loss, accuracy, lr} (lr: its last step's;
    no accuracy when batch_loss returns logits None).

    Seeds fix the data order and the augmentation, so two runs of the same config on the same
    device give the same weights. Under torchrun each process takes an equal share of every global
    batch (config.batch_size in all) and DistributedDataParallel averages the gradients.

    With a TrainingState, the run's whole state is written there after every epoch and a state
    found there at the start is resumed (the same weights as a run never interrupted); the
    state's ``seconds`` then holds the training time of all the run's attempts.

    On a GPU the uint8 images are copied to the device once when they fit (else pinned), the
    forward passes run in config.precision, ``compile`` runs the model through torch.compile, and
    the loop never waits for the device inside an epoch except to refresh the progress bar.
    """
    config.validate()
    dist_ctx = distributed.context()
    generator = torch.Generator().manual_seed(config.seed)
    if config.train_subset:
        data = data.subset(torch.randperm(len(data), generator=generator)[: config.train_subset])
    # channels-last runs convolutions faster on CPUs; the numbers are the same
    model.to(device).to(memory_format=torch.channels_last).train()
    trained = compile_model(model) if compile else model
    if dist_ctx.enabled:
        device_ids = [device.index] if device.type == "cuda" else None
        trained = nn.parallel.DistributedDataParallel(trained, device_ids=device_ids)
    images = place_images(data.images, device)
    labels = data.labels.to(images.device)
    optimizer = make_optimizer(model, config)
    steps_per_epoch = math.ceil(len(data) / config.batch_size)
    schedule = make_schedule(optimizer, config, config.epochs * steps_per_epoch)
    show = progress and dist_ctx.is_main
    takes_index = getattr(batch_loss, "takes_index", False)
    # the bar is refreshed, and divergence checked, every `refresh` steps: reading a number off the
    # GPU waits for all queued work, and doing it every step would idle the device between steps
    refresh = 1 if device.type == "cpu" else 50
    history: list[dict] = []
    parts = stateful_parts(loss=batch_loss, epoch_end=epoch_end)
    first_epoch, stopped, seconds_before, began = 1, False, 0.0, time.perf_counter()
    saved = state.load() if state is not None else None
    if saved is not None:
        state.restore(saved, model, optimizer, generator, parts)
        replay_schedule(schedule, saved["epoch"] * steps_per_epoch)
        history, stopped, seconds_before = list(saved["history"]), bool(saved["stopped"]), float(saved["seconds"])
        first_epoch = saved["epoch"] + 1
        state.resumed_from = saved["epoch"]
        if dist_ctx.is_main:
            tqdm.write(f"resuming from epoch {saved['epoch']}/{config.epochs} (state in {state.path})")
    for epoch in range(first_epoch, config.epochs + 1):
        if stopped:
            break
        model.train()
        total_loss = torch.zeros((), device=device, dtype=torch.float64)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen, scored = 0, False
        order = torch.randperm(len(data), generator=generator)
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch}/{config.epochs}", disable=not show, leave=False,
                   unit="batch")
        for step in bar:
            batch = order[step * config.batch_size:(step + 1) * config.batch_size][dist_ctx.rank::dist_ctx.world_size]
            rows = batch.to(images.device)
            x = images[rows].to(device, non_blocking=True).float().div_(255)
            y = labels[rows].to(device, non_blocking=True)
            if config.augment:
                x = random_crop_flip(x, generator)
            x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, config.precision):
                loss, logits = batch_loss(trained, x, y, index=batch) if takes_index else batch_loss(trained, x, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            lr = optimizer.param_groups[0]["lr"]  # read before the scheduler steps: past its end, onecycle goes below 0
            optimizer.step()
            schedule.step()
            total_loss += loss.detach().double() * len(y)
            if logits is not None:
                correct += (logits.detach().argmax(1) == y).sum()
                scored = True
            seen += len(y)
            if (step + 1) % refresh == 0 or step + 1 == steps_per_epoch:
                check_finite(total_loss, epoch)
                if show:
                    shown = {"acc": f"{correct.item() / seen:.4f}"} if scored else {}
                    bar.set_postfix(loss=f"{total_loss.item() / seen:.4f}", **shown)
        total_loss, correct, seen = distributed.all_reduce_sum([total_loss.item(), float(correct.item()), seen], device)
        record = {"epoch": epoch, "loss": total_loss / seen, "accuracy": correct / seen, "lr": lr}
        if not scored:
            del record["accuracy"]
        history.append(record)
        stop = epoch_end is not None and epoch_end(model, epoch, history[-1])
        if show:  # with whatever the epoch_end hook added to the record (e.g. an overfitting check)
            added = {k: v for k, v in history[-1].items() if k not in ("epoch", "loss", "accuracy", "lr")}
            numbers = "".join(f", {k.replace('_', ' ')} {v:.4f}" for k, v in added.items() if isinstance(v, float))
            accuracy = f", train accuracy {correct / seen:.4f}" if scored else ""
            tqdm.write(f"epoch {epoch}/{config.epochs}: loss {total_loss / seen:.4f}{accuracy}{numbers}")
            for text in (v for v in added.values() if isinstance(v, str)):
                tqdm.write(text)
        stopped = bool(stop)
        if state is not None:
            seconds = seconds_before + time.perf_counter() - began
            if dist_ctx.is_main:
                state.save(epoch=epoch, history=history, stopped=stopped, seconds=seconds, model=model,
                           optimizer=optimizer, generator=generator, parts=parts)
            distributed.barrier()
    if state is not None:
        state.seconds = seconds_before + time.perf_counter() - began
    model.to(memory_format=torch.contiguous_format).eval()
    return history
