"""Certify a checkpoint as `advlab certify` does: the noise level it was trained at (or one given),
every skip-th test image, the smoothed classifier (Cohen et al. 2019, CERTIFY) under one process or
sharded under torchrun, and the certificate written into the evaluation records.

    plan = CertifySettings(n=10_000, n_images=100).plan(meta, "model.safetensors")
    result = certify_images(model, plan, test_data, device="cuda")
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from advlab.data import ImageDataset
from advlab.defenses.smoothing import Smooth
from advlab.errors import AdvlabError, check_range
from advlab.evaluation.certified import CertificationResult, certify_dataset
from advlab.evaluation.records import RecordStore, data_sha256, file_sha256, model_hash, model_summary, recorded
from advlab.models import model_metadata
from advlab.runtime import BatchSize, cache_dir


@dataclass(frozen=True)
class CertifySettings:
    """sigma None: the sigma of the checkpoint's noise recipe. n0 selection and n estimation samples,
    failure probability alpha; n_images images, every skip-th of the test set; noise seed."""

    sigma: float | None = None
    n0: int = 100
    n: int = 100_000
    alpha: float = 0.001
    n_images: int = 500
    skip: int = 1
    seed: int = 0

    def plan(self, meta: dict, source: str = "checkpoint") -> CertifyPlan:
        """The noise level and the failure probability checked against what the checkpoint records."""
        trained = recipe_sigma(meta)
        sigma = self.sigma if self.sigma is not None else trained
        if sigma is None:
            raise AdvlabError(f"{source} was not noise-trained; give the noise level with --sigma")
        return CertifyPlan(self, check_range(sigma, "--sigma", 0.0, 10.0, lo_open=True), trained,
                           check_range(self.alpha, "--alpha", 0.0, 0.5, lo_open=True),
                           model_metadata(meta, source).num_classes)


@dataclass(frozen=True)
class CertifyPlan:
    settings: CertifySettings
    sigma: float
    trained_sigma: float | None
    alpha: float
    num_classes: int

    def images(self, data: ImageDataset) -> tuple[ImageDataset, list[int]]:
        """Every skip-th image of data, at most n_images of them, and their indices."""
        ids = list(range(0, len(data), self.settings.skip))[:self.settings.n_images]
        return data.subset(torch.tensor(ids, dtype=torch.long)), ids


def recipe_sigma(meta: dict) -> float | None:
    """The noise level a noise-trained checkpoint was trained at (None for any other recipe)."""
    recipe = meta.get("recipe") or {}
    return recipe.get("sigma") if recipe.get("method") == "noise" else None


def init_distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) under torchrun (gloo: results are gathered as objects)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))
    return 0, 1, 0


def certify_images(model: nn.Module, plan: CertifyPlan, data: ImageDataset, ids: list[int] | None = None,
                   batch_size: int | BatchSize = 1000, device: torch.device | str = "cpu", progress: bool = True
                   ) -> CertificationResult:
    """Certify data (its images numbered ids) with the smoothed model; resumable (the state lives in
    the cache folder) and sharded over the processes under torchrun."""
    s = plan.settings
    smooth = Smooth(model, plan.num_classes, plan.sigma)
    return certify_dataset(smooth, data, s.n0, s.n, plan.alpha, batch_size, s.seed, ids, device,
                           progress=progress, state_dir=cache_dir() / "certify")


def record_certification(checkpoint: str, meta: dict, data: ImageDataset, result: CertificationResult,
                         plan: CertifyPlan, batch_size: int, model: nn.Module | None = None) -> None:
    """Write the certificate into the evaluation records (advlab leaderboard shows it); keyed by the
    checkpoint file, or by the model's weights for a foreign model spec (pass model)."""
    s = plan.settings
    settings = {"norm": "l2", "sigma": plan.sigma, "n0": s.n0, "n": s.n, "alpha": plan.alpha, "skip": s.skip,
                "images": len(data), "seed": s.seed, "batch_size": batch_size}
    summary = {k: v for k, v in result.summary().items() if k not in ("seconds", "images_per_second")}
    label = f"{meta['architecture']} ({(meta.get('recipe') or {}).get('method', 'standard')})"
    key = model_hash(checkpoint, model) if model is not None else file_sha256(checkpoint)
    recorded(RecordStore(), key, "certify", settings, data_sha256(data.images, data.labels),
             model_summary(meta, label, str(checkpoint)), lambda: {**summary, "seconds": result.seconds}, force=True)
