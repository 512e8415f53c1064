"""Trainer: learns, is deterministic under a seed, caches by config, validates its config."""

from __future__ import annotations

import pytest
import torch

from advlab.errors import AdvlabError
from advlab.training import config_hash, default_config, random_crop_flip, train_model

CPU = torch.device("cpu")


def test_small_training_learns_and_is_cached(lenet_mnist):
    model, meta, path = lenet_mnist
    assert meta["test_accuracy"] > 0.85
    assert meta["history"][-1]["loss"] < meta["history"][0]["loss"]
    # each epoch records the rate its last step used: onecycle's final one is tiny but never negative
    assert all(0 < epoch["lr"] <= 3e-3 for epoch in meta["history"])
    assert meta["history"][-1]["lr"] < 3e-3 / 1000
    config = default_config("mnist", model="lenet", epochs=2, train_subset=6000, lr=3e-3)
    again, meta2, path2, cached = train_model(config, CPU, progress=False)
    assert cached and path2 == path and meta2["test_accuracy"] == meta["test_accuracy"]
    x = torch.rand(5, 1, 28, 28)
    assert torch.equal(again(x), model(x))


def test_same_seed_same_weights_other_seed_other_hash():
    config = default_config("mnist", model="linear", epochs=1, train_subset=512, batch_size=64)
    a, *_ = train_model(config, CPU, progress=False, use_cache=False)
    b, *_ = train_model(config, CPU, progress=False, use_cache=False)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    other = default_config("mnist", model="linear", epochs=1, train_subset=512, batch_size=64, seed=1)
    assert config_hash(other) != config_hash(config)


def test_crop_flip_keeps_shape_range_and_content():
    x = torch.rand(8, 3, 32, 32)
    out = random_crop_flip(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1
    assert not torch.equal(out, x)


@pytest.mark.parametrize("override,message", [
    ({"optimizer": "rmsprop"}, "unknown optimizer"), ({"lr": -1.0}, "learning rate"),
    ({"epochs": 0}, "epochs"), ({"schedule": "zigzag"}, "unknown schedule"),
])
def test_bad_training_configs_are_user_errors(override, message):
    with pytest.raises(AdvlabError, match=message):
        default_config("mnist", **override)


def test_cyclic_schedule_is_wong_et_als_triangle():
    """Linear from 0 to the peak at 40% of the steps and back to 0; Adam's momentum untouched (onecycle
    peaks at 25% and cycles beta1; fast adversarial training is sensitive to both, docs/defenses.md)."""
    from advlab.training.trainer import make_schedule

    weights = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam(weights.parameters(), lr=5e-3)
    schedule = make_schedule(optimizer, default_config("mnist", schedule="cyclic", lr=5e-3), 100)
    rates = []
    for _ in range(100):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert max(rates) == pytest.approx(5e-3) and rates.index(max(rates)) == 39
    assert rates[0] == pytest.approx(5e-3 / 40) and rates[-1] == 0.0
    assert all(a < b for a, b in zip(rates[:39], rates[1:40], strict=True))
    assert all(a > b for a, b in zip(rates[39:-1], rates[40:], strict=True))
    assert optimizer.param_groups[0]["betas"] == (0.9, 0.999)
