"""The demo's section: backdoor poisoning, detection and retraining on MNIST at a small budget."""

from __future__ import annotations

import torch

from advlab.detection.spectre import MAX_K
from advlab.evaluation.backdoor import DEFENSES, BackdoorSettings, run_backdoor
from advlab.report.backdoor import add_backdoor_sections

DEMO_ORDER = 60


def demo_section(ctx) -> None:
    """The pipeline on MNIST at a small budget: the MNIST CNN on 6,000 images, 1% poisons with a 3x3
    patch, all three defenses, each followed by retraining (LeNet is too small to pick up a 1%
    backdoor in 2 epochs). Quick mode: LeNet, 2,000 images, 1 epoch, retraining after SPECTRE only."""
    quick = ctx.quick
    settings = BackdoorSettings(dataset="mnist", trigger="patch", trigger_options={"size": 3}, target="0",
                                n_poison=20 if quick else 60, defenses=DEFENSES,
                                retrain=("spectre",) if quick else None,
                                train_overrides={"model": "lenet", "epochs": 1, "lr": 3e-3} if quick
                                else {"model": "mnist_cnn", "epochs": 2},
                                train_subset=2000 if quick else 6000, max_k=9 if quick else MAX_K)
    test = ctx.test_data
    if quick:  # a fixed random fifth of the test set: evaluation dominates the quick budget
        test = test.subset(torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:2000].sort().values)
    result = run_backdoor(settings, ctx.train_data, test, ctx.device, ctx.progress)
    add_backdoor_sections(ctx.run, result, test, prefix="backdoor_")
    ctx.run.metrics["backdoor"] = result.metrics
