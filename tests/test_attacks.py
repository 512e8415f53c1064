"""Gradient attacks with a bound (FGSM, BIM/PGD, MI-FGSM): exact bounds, the [0, 1] box, eps = 0,
targeted success, closed forms on a linear classifier, costs, and the shared pitfalls of the base class."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from advlab.attacks import BIM, FGSM, MIFGSM, PGD, build_attack
from advlab.errors import AdvlabError


@pytest.fixture(scope="module")
def mnist_first32(mnist_test):
    """The first 32 MNIST test images (this module's own size; conftest's mnist_batch holds 64)."""
    x, y = mnist_test.tensors(32)
    return x, y


def linear_model(d: int = 16, classes: int = 2, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layer = nn.Linear(d, classes)
    with torch.no_grad():
        layer.weight.mul_(0.5)
    return nn.Sequential(nn.Flatten(), layer).eval()


def linear_inputs(model, n: int = 8, seed: int = 1):
    """Images near 0.5 (far from the box walls) labelled with the model's own prediction."""
    g = torch.Generator().manual_seed(seed)
    x = 0.5 + 0.05 * (torch.rand(n, 1, 4, 4, generator=g) - 0.5)
    with torch.no_grad():
        y = model(x).argmax(1)
    return x, y


BOUNDED = [
    FGSM(eps=0.1), FGSM(eps=1.5, norm="l2"),
    PGD(eps=0.1, steps=5, step_size=0.03), PGD(eps=1.5, steps=5, norm="l2", loss="cw"),
    PGD(eps=0.1, steps=5, restarts=2, early_stop=True, seed=0), BIM(eps=0.1, steps=5),
    MIFGSM(eps=0.1, steps=5), MIFGSM(eps=1.5, steps=5, norm="l2"),
]


@pytest.mark.parametrize("attack", BOUNDED, ids=lambda a: f"{a.name}-{a.norm}")
def test_bound_and_box_hold(attack, lenet_mnist, mnist_first32):
    model, _, _ = lenet_mnist
    x, y = mnist_first32
    result = attack(model, x, y)
    delta = (result.adv - x).flatten(1)
    size = delta.abs().amax(1) if attack.norm == "linf" else delta.norm(dim=1)
    assert float(size.max()) <= attack.eps + 1e-6
    assert float(result.adv.min()) >= 0.0 and float(result.adv.max()) <= 1.0
    assert torch.equal(result.norms[attack.norm], size)


@pytest.mark.parametrize("attack", [FGSM(eps=0.0), PGD(eps=0.0, steps=3), PGD(eps=0.0, norm="l2", steps=3),
                                    MIFGSM(eps=0.0, steps=3)], ids=lambda a: f"{a.name}-{a.norm}")
def test_eps_zero_reproduces_clean_accuracy_exactly(attack, lenet_mnist, mnist_first32):
    model, _, _ = lenet_mnist
    x, y = mnist_first32
    result = attack(model, x, y)
    assert torch.equal(result.adv, x)
    assert result.robust_accuracy == result.clean_correct.float().mean().item()


def test_pgd_beats_fgsm_and_targeted_pgd_hits_target(lenet_mnist, mnist_first32):
    model, _, _ = lenet_mnist
    x, y = mnist_first32
    fgsm = FGSM(eps=0.15)(model, x, y)
    pgd = PGD(eps=0.15, steps=20, step_size=0.02, seed=0)(model, x, y)
    assert pgd.robust_accuracy <= fgsm.robust_accuracy
    target = (y + 3) % 10  # (y + 1 asks LeNet for 0 -> 1, out of reach at 0.3: a 1 cannot lose the ring)
    hit = PGD(eps=0.3, steps=30, step_size=0.03, seed=0)(model, x, y, target=target)
    assert hit.success_rate >= 0.9
    assert torch.equal(hit.success, hit.adv_pred == target)


def test_fgsm_closed_form_on_linear_classifier():
    """Two-class linear model, y = 0: grad_x CE = p_1 (w_1 - w_0), so x' = x + eps * sign(w_1 - w_0)
    and the logit gap moves by exactly eps * ||w_1 - w_0||_1 (no pixel reaches the box)."""
    model = linear_model()
    x, y = linear_inputs(model)
    w = model[1].weight.detach()
    eps = 0.05
    result = FGSM(eps=eps)(model, x, y)
    direction = (w[1] - w[0]).sign().view(1, 1, 4, 4)
    sign = torch.where(y == 0, 1.0, -1.0).view(-1, 1, 1, 1)
    assert torch.allclose(result.adv, x + eps * sign * direction, atol=1e-7)
    gap = lambda z: (model(z) @ torch.tensor([-1.0, 1.0]))  # noqa: E731
    with torch.no_grad():
        moved = (gap(result.adv) - gap(x)) * sign.view(-1)
    assert torch.allclose(moved, torch.full_like(moved, eps * float((w[1] - w[0]).abs().sum())), rtol=1e-4)


def test_cost_counts_passes_and_skips_finished_samples(lenet_mnist, mnist_first32):
    model, _, _ = lenet_mnist
    x, y = mnist_first32
    with torch.no_grad():
        wrong_label = (model(x).argmax(1) + 1) % 10  # every sample "already misclassified"
    skipped = PGD(eps=0.3, steps=7)(model, x, wrong_label)
    assert torch.equal(skipped.adv, x) and skipped.cost.forward == 0 and skipped.success.all()
    result = PGD(eps=0.1, steps=7)(model, x, y)
    attacked = int(result.clean_correct.sum())
    assert result.cost.forward == result.cost.backward == 7 * attacked
    assert torch.equal(result.adv[~result.clean_correct], x[~result.clean_correct])


def test_early_stop_and_restarts_never_weaken_the_attack(lenet_mnist, mnist_first32):
    model, _, _ = lenet_mnist
    x, y = mnist_first32
    fixed = PGD(eps=0.08, steps=10, step_size=0.02, seed=3)(model, x, y)
    early = PGD(eps=0.08, steps=10, step_size=0.02, seed=3, early_stop=True)(model, x, y)
    restarts = PGD(eps=0.08, steps=10, step_size=0.02, seed=3, restarts=3)(model, x, y)
    assert bool((early.success | ~fixed.success).all())  # success(early) contains success(fixed)
    assert bool((restarts.success | ~fixed.success).all())
    assert early.cost.backward <= fixed.cost.backward


def test_mode_and_requires_grad_restored_and_softmax_warned(lenet_mnist, mnist_first32):
    model, _, _ = lenet_mnist
    x, y = mnist_first32
    model.train()
    try:
        PGD(eps=0.1, steps=2)(model, x[:4], y[:4])
        assert model.training and all(p.requires_grad for p in model.parameters())
    finally:
        model.eval()
    soft = nn.Sequential(model, nn.Softmax(dim=1))
    with pytest.warns(UserWarning, match="softmax"):
        FGSM(eps=0.1)(soft, x[:4], y[:4])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FGSM(eps=0.1)(model, x[:4], y[:4])


def test_user_mistakes_raise_advlab_error(lenet_mnist, mnist_first32):
    model, _, _ = lenet_mnist
    x, y = mnist_first32
    for make in (lambda: PGD(eps=1.5), lambda: PGD(norm="l1"), lambda: PGD(loss="hinge"), lambda: PGD(steps=0),
                 lambda: FGSM(eps=-0.1), lambda: build_attack("jsma"), lambda: build_attack("cw", norm="linf")):
        with pytest.raises(AdvlabError):
            make()
    with pytest.raises(AdvlabError, match=r"\[0, 1\]"):
        FGSM(eps=0.1)(model, x * 255, y)
    with pytest.raises(AdvlabError, match="target"):
        FGSM(eps=0.1)(model, x, y, target=torch.full_like(y, 12))
