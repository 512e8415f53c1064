"""Attacking an autoencoder over a sweep of budgets (Tabacof et al. 2016; Kos, Fischer and Song 2017):
the measurements behind `advlab autoencoder-attack`; the report section is
`advlab.report.autoencoder.autoencoder_section`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from advlab.attacks.autoencoder import (
    AutoencoderAttack,
    AutoencoderAttackResult,
    budget_sweep,
    pair_with_targets,
    reconstruction_similarity,
)
from advlab.errors import AdvlabError
from advlab.models import architecture, load_checkpoint
from advlab.training.autoencoder import autoencoder_config, train_autoencoder

MODES = ("latent", "output")


def load_or_train_autoencoder(spec: str, dataset: str, device: torch.device, epochs: int | None = None,
                              train_subset: int | None = None, data_dir: str | None = None,
                              progress: bool = True) -> tuple[nn.Module, dict]:
    """A checkpoint of an autoencoder, or an autoencoder architecture trained with its recipe on
    dataset (cached by the full config)."""
    if spec.endswith(".safetensors"):
        model, meta = load_checkpoint(spec, device)
        if architecture(meta["architecture"]).kind != "autoencoder":
            raise AdvlabError(f"{spec} holds a {meta['architecture']} classifier, not an autoencoder")
        return model, meta
    config = autoencoder_config(dataset, model=spec, epochs=epochs, train_subset=train_subset)
    model, meta, _, _ = train_autoencoder(config, device, data_dir, progress=progress)
    return model, meta


@dataclass
class AutoencoderSweep:
    """metrics: the sweep's rows per mode, the reference similarities, settings (and the penalized
    attack when asked). results: each mode's attack result per budget."""

    metrics: dict
    results: dict[str, dict[float, AutoencoderAttackResult]]
    modes: list[str]
    norm: str
    budgets: list[float]
    has_classifier: bool


def autoencoder_sweep(autoencoder: nn.Module, classifier: nn.Module | None, x: torch.Tensor, y: torch.Tensor,
                      pool_x: torch.Tensor, pool_y: torch.Tensor, modes: list[str], norm: str, budgets: list[float],
                      steps: int, seed: int, penalty: float | None = None) -> AutoencoderSweep:
    """Pair each source with a random pool image of another class as target, run budget_sweep for each
    mode, and measure the references: the clean source's reconstruction against the target, and the
    target's own reconstruction (the best an attack can reach)."""
    bad = [m for m in modes if m not in MODES]
    if not modes or bad:
        raise AdvlabError(f"unknown attack mode {', '.join(bad) or repr(modes)}; choose latent, output or both")
    idx = pair_with_targets(y, pool_y, seed)
    x_t, y_t = pool_x[idx], pool_y[idx]
    with torch.no_grad():
        clean_recon = autoencoder.eval()(x)
        reference = {"source_reconstruction_to_target": reconstruction_similarity(clean_recon, x_t),
                     "target_reconstruction_to_target": reconstruction_similarity(autoencoder(x_t), x_t)}
    reference = {k: {m: v.mean().item() for m, v in d.items()} for k, d in reference.items()}
    rows_by_mode, results_by_mode = {}, {}
    for mode in modes:
        rows_by_mode[mode], results_by_mode[mode] = budget_sweep(autoencoder, classifier, x, x_t, y_t, budgets,
                                                                 mode, norm, steps, seed)
    metrics = {"sweep": rows_by_mode, "reference": reference, "n": len(x), "steps": steps, "norm": norm}
    if penalty is not None:
        result = AutoencoderAttack(modes[0], eps=None, norm=norm, steps=steps, penalty=penalty)(autoencoder, x, x_t)
        metrics["penalized"] = {"lambda": penalty, "mode": modes[0], **result.summary()}
    return AutoencoderSweep(metrics, results_by_mode, list(modes), norm, list(budgets), classifier is not None)
