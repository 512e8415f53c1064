"""Robust accuracy over an eps list in one call, and accuracy-versus-eps curves from minimal norms."""

from __future__ import annotations

import math

import pytest
import torch

from advlab.attacks import FGSM, PGD, DeepFool
from advlab.errors import AdvlabError
from advlab.evaluation.robust import minimal_norms, robust_accuracy


@pytest.fixture(scope="module")
def data(mnist_test):
    return mnist_test.tensors(24)


def test_robust_accuracy_matches_per_eps_attacks_on_nested_balls(lenet_mnist, data):
    """eps = 0 is clean accuracy exactly; at each eps a sample is robust iff the attack failed at that
    eps and at every smaller one (the balls are nested), which is what the one-call evaluation returns."""
    model, _, _ = lenet_mnist
    x, y = data
    eps = [0.0, 0.05, 0.1, 0.2]
    ev = robust_accuracy(model, x, y, {"fgsm": lambda e: FGSM(eps=e)}, eps, batch_size=16, progress=False)
    with torch.no_grad():
        clean = model(x).argmax(1) == y
    assert ev.accuracy["fgsm"][0] == clean.float().mean().item() == ev.clean_accuracy
    survived = clean.clone()
    for e, acc in zip(eps[1:], ev.accuracy["fgsm"][1:], strict=True):
        survived &= FGSM(eps=e)(model, x, y).adv_pred == y
        assert acc == pytest.approx(survived.float().mean().item(), abs=1e-9)
    assert all(a >= b for a, b in zip(ev.accuracy["fgsm"], ev.accuracy["fgsm"][1:], strict=False))
    broken = ev.broken_at["fgsm"]
    assert bool((broken[~clean] == 0).all())


def test_robust_accuracy_with_early_stop_is_cheaper_and_not_weaker(lenet_mnist, data):
    model, _, _ = lenet_mnist
    x, y = data
    eps = [0.1, 0.2]
    fixed = robust_accuracy(model, x, y, {"pgd": lambda e: PGD(eps=e, steps=10, seed=0)}, eps, progress=False)
    early = robust_accuracy(model, x, y, {"pgd": lambda e: PGD(eps=e, steps=10, seed=0, early_stop=True)}, eps,
                            progress=False)
    assert all(a <= b for a, b in zip(early.accuracy["pgd"], fixed.accuracy["pgd"], strict=True))
    assert early.cost["pgd"].backward < fixed.cost["pgd"].backward
    both = robust_accuracy(model, x, y, {"fgsm": lambda e: FGSM(eps=e), "pgd": lambda e: PGD(eps=e, steps=10)},
                           eps, progress=False)
    worst = both.worst_case()
    assert all(w <= min(both.accuracy["fgsm"][i], both.accuracy["pgd"][i]) for i, w in enumerate(worst))
    assert set(both.to_dict()) >= {"eps", "robust_accuracy", "worst_case", "clean_accuracy"}


def test_minimal_norm_curve_and_median(lenet_mnist, data):
    model, _, _ = lenet_mnist
    x, y = data
    ev = minimal_norms(model, x, y, DeepFool(box_aware=3), batch_size=16, progress=False)
    with torch.no_grad():
        clean = model(x).argmax(1) == y
    assert ev.accuracy_at([0.0])[0] == clean.float().mean().item()
    assert bool((ev.norms[~clean] == 0).all()) and bool(torch.isfinite(ev.norms).all())
    grid, acc = ev.curve(points=20)
    assert acc[0] == ev.clean_accuracy and acc[-1] == 0.0
    assert all(a >= b for a, b in zip(acc, acc[1:], strict=False))
    assert ev.median == pytest.approx(float(ev.norms.median()))
    # The curve at the median norm: about half the samples (ties aside) have a larger minimal norm.
    assert ev.accuracy_at([ev.median])[0] <= 0.5 + 1e-9
    assert not math.isnan(ev.median_of_successes)


def test_robust_accuracy_rejects_bad_arguments(lenet_mnist, data):
    model, _, _ = lenet_mnist
    x, y = data
    with pytest.raises(AdvlabError):
        robust_accuracy(model, x, y, {}, [0.1], progress=False)
    with pytest.raises(AdvlabError):
        robust_accuracy(model, x, y, {"fgsm": lambda e: FGSM(eps=e)}, [-0.1], progress=False)
    with pytest.raises(AdvlabError):
        minimal_norms(model, x, y, DeepFool(), norm="l3", progress=False)


def test_warm_start_across_eps_is_cheaper_and_not_weaker(lenet_mnist, data):
    """Survivors of a smaller eps start the next eps where it left them (inside the larger ball)."""
    model, _, _ = lenet_mnist
    x, y = data
    eps = [0.05, 0.1, 0.15]

    def pgd(e):
        return PGD(eps=e, steps=20, step_size=0.01, seed=0, early_stop=True)

    cold = robust_accuracy(model, x, y, {"pgd": pgd}, eps, progress=False, warm_start=False)
    warm = robust_accuracy(model, x, y, {"pgd": pgd}, eps, progress=False)
    assert all(w <= c + 1e-9 for w, c in zip(warm.accuracy["pgd"], cold.accuracy["pgd"], strict=True))
    assert warm.cost["pgd"].backward < cold.cost["pgd"].backward
    # recheck attacks each eps on its own (no warm start), so its independent figures stay honest
    rechecked = robust_accuracy(model, x, y, {"pgd": pgd}, eps, progress=False, recheck=True)
    assert rechecked.accuracy["pgd"] == cold.accuracy["pgd"]


def test_pgd_start_point_is_projected_and_used(lenet_mnist, data):
    model, _, _ = lenet_mnist
    x, y = data
    found = PGD(eps=0.2, steps=20, seed=0)(model, x, y)
    assert found.success.any()
    # starting on adversarial points, early-stopping PGD needs one pass per sample to confirm them
    again = PGD(eps=0.2, steps=20, early_stop=True)(model, x, y, start=found.adv)
    assert bool(again.success[found.success].all())
    attacked = int(found.clean_correct.sum())
    assert again.cost.backward < 20 * attacked
    # a start far outside the ball is projected onto it (and the box) first
    far = PGD(eps=0.05, steps=1, step_size=1e-6)(model, x, y, start=torch.ones_like(x))
    assert float((far.adv - x).abs().max()) <= 0.05 + 1e-6
    assert float(far.adv.min()) >= 0.0 and float(far.adv.max()) <= 1.0
    with pytest.raises(AdvlabError, match="start point"):
        FGSM(eps=0.1)(model, x, y, start=x)
    with pytest.raises(AdvlabError, match="must match"):
        PGD(eps=0.1)(model, x, y, start=x[:2])
