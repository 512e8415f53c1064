"""The library core every attack and training loss shares: the threat model, the PGD loop, Cost,
the attack registry's table, and the eval_mode context manager."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlab.attacks import APGD, FAB, PGD, Cost, ThreatModel, build_attack
from advlab.attacks.base import attack_mode
from advlab.attacks.common import loss_gradient
from advlab.attacks.pgd import ascend
from advlab.defenses.adversarial import linf_pgd_examples
from advlab.errors import AdvlabError
from advlab.runtime import eval_mode, frozen_parameters


def images(n: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g)
    x[:, :, :2] = 0.0  # pixels on the box walls, as on MNIST
    x[:, :, -2:] = 1.0
    return x


def far_points(x: torch.Tensor, seed: int = 1) -> torch.Tensor:
    """Points well outside any small ball around x and outside the box."""
    g = torch.Generator().manual_seed(seed)
    return x + 3 * (torch.rand(x.shape, generator=g) * 2 - 1)


def inside(threat: ThreatModel, adv: torch.Tensor, x: torch.Tensor) -> bool:
    delta = (adv - x).flatten(1)
    size = delta.abs().amax(1) if threat.norm == "linf" else delta.norm(dim=1)
    return bool((size <= threat.eps * (1 + 1e-6) + 1e-7).all() and adv.min() >= 0 and adv.max() <= 1)


@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("linf", 0.3), ("l2", 0.5), ("l2", 2.0)])
def test_projection_is_idempotent_and_lands_in_the_ball_and_the_box(norm, eps):
    threat, x = ThreatModel(norm, eps), images()
    projected = threat.project(far_points(x), x)
    assert inside(threat, projected, x)
    assert torch.allclose(threat.project(projected, x), projected, atol=1e-6)
    enforced = threat.enforce(far_points(x), x)
    assert inside(threat, enforced, x)
    # a point already inside is left where it is
    assert torch.equal(threat.project(x, x), x)


@pytest.mark.parametrize("norm, eps", [("linf", 0.3), ("l2", 1.5)])
def test_random_start_lies_inside_and_is_reproducible(norm, eps):
    threat, x = ThreatModel(norm, eps), images()
    first = threat.random_start(x, torch.Generator().manual_seed(0))
    assert inside(threat, first, x)
    assert torch.equal(first, threat.random_start(x, torch.Generator().manual_seed(0)))
    assert not torch.equal(first, x)
    assert torch.equal(ThreatModel(norm, 0.0).random_start(x), x)


def test_linf_bounds_and_clip_are_the_projection_to_the_bit():
    threat, x = ThreatModel("linf", 0.2), images()
    far = far_points(x)
    lo, hi = threat.bounds(x)
    assert torch.equal(threat.clip(far.clone(), lo, hi), threat.project(far, x))
    with pytest.raises(AdvlabError, match="linf"):
        ThreatModel("l2", 1.0).bounds(x)


@pytest.mark.parametrize("make, words", [
    (lambda: ThreatModel("l1", 0.1), "unknown norm 'l1'"),
    (lambda: ThreatModel("linf", -0.1), "eps (linf)"),
    (lambda: ThreatModel("linf", 1.5), "eps (linf)"),
    (lambda: ThreatModel("l2", float("nan")), "eps (l2)"),
    (lambda: ThreatModel("linf", 0.1, box=(1.0, 0.0)), "lo < hi"),
    (lambda: PGD(norm="l3"), "unknown norm"),
    (lambda: FAB(norm="l0"), "unknown norm"),
    (lambda: APGD(eps=2.0), "eps (linf)"),
])
def test_threat_model_validation_is_one_line(make, words):
    with pytest.raises(AdvlabError) as info:
        make()
    message = str(info.value)
    assert words in message and "\n" not in message


def test_every_bounded_attack_holds_one_threat_model():
    for name in ("fgsm", "bim", "pgd", "mifgsm", "apgd-ce", "apgd-t"):
        attack = build_attack(name, eps=0.2, norm="l2")
        assert attack.threat == ThreatModel("l2", 0.2), name


def test_costs_add_queries_included():
    a, b = Cost(3, 2, 1), Cost(10, 20, 30)
    assert a + b == Cost(13, 22, 31)
    assert sum([a, b], Cost()) == Cost(13, 22, 31)
    assert sum([a, b]) == Cost(13, 22, 31)
    total = Cost()
    total += a
    assert total == a and total is not a
    assert (a + b).to_dict() == {"forward": 13, "backward": 22, "queries": 31}


def test_registry_passes_only_what_was_given():
    assert build_attack("pgd").steps == PGD().steps
    assert build_attack("pgd", steps=7).steps == 7
    assert build_attack("apgd-dlr").loss == "dlr" and build_attack("apgd-ce").loss == "ce"
    assert build_attack("apgd-ce").early_stop is APGD().early_stop  # the CLI's early_stop=False is not APGD's option
    assert build_attack("fab-t").targets == 9 and build_attack("fab-t", targets=3).targets == 3
    assert build_attack("fab").targets is None
    with pytest.raises(AdvlabError, match="L2 attack"):
        build_attack("lbfgs", norm="linf")


class Boom(Exception):
    pass


def test_eval_mode_and_frozen_parameters_restore_after_an_exception():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5)).train()
    model[0].bias.requires_grad_(False)
    with pytest.raises(Boom), eval_mode(model), frozen_parameters(model):
        assert not model.training and not model[1].training
        assert not any(p.requires_grad for p in model.parameters())
        raise Boom
    assert model.training and model[1].training
    assert model[0].weight.requires_grad and not model[0].bias.requires_grad
    model.eval()
    with eval_mode(model):
        pass
    assert not model.training  # an eval-mode model stays in eval mode
    model.train()
    with pytest.raises(Boom), attack_mode(model):
        raise Boom
    assert model.training and model[0].weight.requires_grad


def small_classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 3)).eval()


def test_training_examples_come_from_the_attack_loop_with_the_old_arithmetic():
    """One PGD loop: the training loss's examples are ascend's, and equal to the bit to the loop the
    training losses had (clip to the precomputed ball-and-box bounds after a sign step)."""
    model, x = small_classifier(), images(8)
    y = torch.arange(8) % 3
    for p in model.parameters():
        p.requires_grad_(False)
    eps, steps, step = 0.1, 4, 0.03
    lo, hi = (x - eps).clamp(min=0.0), (x + eps).clamp(max=1.0)
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(0))
    old = torch.maximum(torch.minimum(x + (2 * noise - 1) * eps, hi), lo)
    for _ in range(steps):
        grad, _, _ = loss_gradient(model, old, y, None, "ce", Cost())
        old = torch.maximum(torch.minimum(old + step * grad.sign(), hi), lo)
    new = linf_pgd_examples(model, x, y, eps, steps, step, True, torch.Generator().manual_seed(0))
    assert torch.equal(new, old)
    start = ThreatModel("linf", eps).random_start(x, torch.Generator().manual_seed(0))
    assert torch.equal(ascend(model, x, y, None, ThreatModel("linf", eps), start, steps, step, "ce", Cost()), new)


def test_the_registry_passes_restarts_loss_and_seed_only_to_the_attacks_that_take_them():
    pgd = build_attack("pgd", restarts=3, loss="cw", seed=5)
    assert (pgd.restarts, pgd.loss, pgd.seed) == (3, "cw", 5)
    assert build_attack("apgd-dlr", loss="ce", restarts=2).loss == "dlr"  # the name fixes APGD's loss
    assert build_attack("apgd-ce", restarts=2, seed=7).restarts == 2
    build_attack("deepfool", restarts=3, loss="cw", seed=1)  # options DeepFool does not take are left out
