"""The masking checks of advlab.evaluation.diagnostics, both ways: each fires on a model built to mask
gradients the way catastrophic overfitting and saturated softmax outputs do, and none fires on a
standard or a PGD-trained small model."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from advlab.evaluation.defense import evaluate_defense, suite_outcomes
from advlab.evaluation.diagnostics import (
    AttackOutcome,
    check_more_effort,
    check_saturation,
    check_single_step_gap,
    check_stronger_attack,
    masking_diagnostics,
)


class FGSMProof(nn.Module):
    """Two classes on the mean pixel shift t: logits [0, g(t)] with g(t) = A sin(pi t / eps) - b.

    At t = 0 (the clean grey image) and at t = +-eps exactly (where one FGSM step of size eps lands,
    since every pixel's gradient has the same sign) g < 0: class 0, correct. Half-way, g > 0: an
    iterative attack with small steps walks up the slope into the wrong class. The model defeats the
    single step and nothing else, as a catastrophically overfitted one does."""

    def __init__(self, eps: float, amplitude: float = 4.0, bias: float = 0.5) -> None:
        super().__init__()
        self.eps, self.amplitude, self.bias = eps, amplitude, bias
        self.anchor = nn.Linear(1, 1)

    def forward(self, x):
        t = x.flatten(1).mean(1) - 0.5
        g = self.amplitude * torch.sin(math.pi * t / self.eps) - self.bias
        return torch.stack([torch.zeros_like(g), g], 1)


class LuckyStart(nn.Module):
    """Class 0 unless pixel (0, 0) is raised by more than 0.8 eps, through a step: the gradient is zero,
    so PGD stays where its random start put it and only a lucky start (10% of them) breaks a sample.
    Each restart finds about a tenth of the rest: accuracy keeps falling with restarts."""

    def __init__(self, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.anchor = nn.Linear(1, 1)

    def forward(self, x):
        shift = x[:, 0, 0, 0] - 0.5
        g = (shift > 0.8 * self.eps).float() * 10 - 5 + 0.0 * x.flatten(1).sum(1)  # a graph with zero gradient
        return torch.stack([torch.zeros_like(g), g], 1)


class Scaled(nn.Module):
    def __init__(self, model: nn.Module, factor: float) -> None:
        super().__init__()
        self.model, self.factor = model, factor

    def forward(self, x):
        return self.model(x) * self.factor


def grey(n: int = 40):
    return torch.full((n, 1, 28, 28), 0.5), torch.zeros(n, dtype=torch.long)


def masks(n: int, correct: int) -> torch.Tensor:
    m = torch.zeros(n, dtype=torch.bool)
    m[:correct] = True
    return m


def by_name(diagnostics):
    return {d.name.split(" (")[0]: d for d in diagnostics}


# ---- the single-step gap, on per-sample masks with the issue's figures and on a real model ----

def test_single_step_gap_fires_on_the_issues_figures_and_not_on_standard_or_pgd_trained_ones():
    n = 1000
    clean = masks(n, 985)
    overfitted = {0.3: [AttackOutcome("FGSM", masks(n, 886), single_step=True), AttackOutcome("PGD", masks(n, 249))]}
    assert check_single_step_gap(overfitted, clean).fired
    # the standard and PGD-trained mnist_cnn of docs/defenses.md (FGSM, worst case of PGD-CE and PGD-C&W)
    standard = {0.1: [AttackOutcome("FGSM", masks(n, 832), True), AttackOutcome("PGD", masks(n, 676))],
                0.2: [AttackOutcome("FGSM", masks(n, 295), True), AttackOutcome("PGD", masks(n, 0))],
                0.3: [AttackOutcome("FGSM", masks(n, 41), True), AttackOutcome("PGD", masks(n, 0))]}
    assert not check_single_step_gap(standard, masks(n, 989)).fired
    pgd = {0.3: [AttackOutcome("FGSM", masks(n, 944), True), AttackOutcome("PGD", masks(n, 899))]}
    assert not check_single_step_gap(pgd, masks(n, 985)).fired


def test_single_step_gap_and_stronger_attack_fire_on_a_model_that_only_defeats_fgsm():
    eps = 0.3
    model = FGSMProof(eps)
    x, y = grey()
    ev = evaluate_defense(model, x, y, [eps], steps=20, restarts=1, blackbox_n=0, unbounded_n=0, effort_n=0,
                          progress=False)
    assert ev.robust.accuracy["fgsm"] == [1.0] and ev.robust.accuracy["pgd"] == [0.0]
    fired = by_name(ev.diagnostics)
    gap = fired["single-step far above iterative"]
    assert gap.fired and "catastrophic overfitting" in gap.message and gap.next_step


# ---- saturation: the size of the gradient, not only exact zeros ----

def test_saturation_fires_on_tiny_but_nonzero_gradients_and_on_zero_ones(lenet_mnist, mnist_batch):
    model, _, _ = lenet_mnist
    x, y = mnist_batch
    assert not check_saturation(model, x, y, 0.3).fired
    tiny = check_saturation(Scaled(model, 10.0).eval(), x, y, 0.3)  # one-hot in float32, gradient ~1e-18
    assert tiny.fired, tiny.message
    assert tiny.evidence["zero_ce_gradient"] < 0.5 and tiny.evidence["median_ce_gradient_l1"] > 0
    assert tiny.evidence["median_margin_gradient_l1"] > 1.0  # the logits still have a gradient
    zero = check_saturation(Scaled(model, 1000.0).eval(), x, y, 0.3)
    assert zero.fired and zero.evidence["zero_ce_gradient"] > 0.5 and "C&W" in zero.next_step


# ---- more effort ----

def test_more_effort_fires_when_each_restart_finds_more(lenet_mnist):
    eps = 0.3
    x, y = grey(100)
    check = check_more_effort(LuckyStart(eps), x, y, eps, steps=5, restarts=5)
    curve = check.evidence["accuracy_by_restarts"]
    assert check.fired, check.message
    assert curve[0] > curve[-1] + 0.15 and all(a >= b for a, b in zip(curve, curve[1:], strict=False))


# ---- a stronger attack breaks what a weaker one left ----

def test_stronger_attack_reports_by_how_much_the_weaker_one_overstates():
    n = 200
    outcomes = [AttackOutcome("APGD-CE", masks(n, 38)), AttackOutcome("APGD-T", masks(n, 19), alone=False),
                AttackOutcome("FGSM", masks(n, 180), single_step=True)]
    check = check_stronger_attack(outcomes, 0.3)
    assert check.fired and "APGD-CE alone would have overstated robustness by 9.5 points" in check.message
    same = [AttackOutcome("PGD-CE", masks(n, 180)), AttackOutcome("PGD-CW", masks(n, 179))]
    assert not check_stronger_attack(same, 0.3).fired


def test_stronger_attack_fires_when_the_cross_entropy_is_saturated(lenet_mnist, mnist_batch):
    model, _, _ = lenet_mnist
    x, y = mnist_batch
    ev = evaluate_defense(Scaled(model, 1000.0).eval(), x, y, [0.3], steps=20, restarts=1, blackbox_n=0,
                          unbounded_n=0, effort_n=0, progress=False)
    stronger = by_name(ev.diagnostics)["a stronger attack breaks what a weaker one left"]
    assert stronger.fired and "cross-entropy" in stronger.message, stronger.message


# ---- silent on standard and PGD-trained models ----

NEW_CHECKS = {"single-step far above iterative", "saturated outputs", "accuracy keeps falling with more restarts or "
              "steps", "a stronger attack breaks what a weaker one left"}


@pytest.fixture(scope="module")
def pgd_lenet():
    """A LeNet PGD-trained at eps 0.15 on 6,000 images for 2 epochs (the tiny recipe of test_defenses)."""
    from advlab.defenses.adversarial import adversarial_loss, pgd_recipe
    from advlab.training import default_config, train_model

    recipe = pgd_recipe(0.15, steps=5)
    config = default_config("mnist", model="lenet", epochs=2, train_subset=6000, lr=3e-3, recipe=recipe)
    model, _, _, _ = train_model(config, torch.device("cpu"), batch_loss=adversarial_loss(recipe, train_images=6000),
                                 progress=False)
    return model.eval()


@pytest.mark.parametrize("which, eps", [("standard", [0.05, 0.1, 0.2]), ("pgd", [0.05, 0.1, 0.15])])
def test_new_checks_stay_silent_on_standard_and_pgd_trained_models(which, eps, lenet_mnist, pgd_lenet, mnist_test):
    model = lenet_mnist[0] if which == "standard" else pgd_lenet
    x, y = mnist_test.tensors(100)
    ev = evaluate_defense(model, x, y, eps, steps=20, restarts=2, blackbox_n=0, unbounded_n=0, effort_n=100,
                          progress=False)
    new = [d for d in ev.diagnostics if d.name.split(" (")[0] in NEW_CHECKS]
    assert len(new) == 4
    assert not any(d.fired for d in new), [d.message for d in new if d.fired]


def test_masking_diagnostics_take_any_suites_per_sample_results(lenet_mnist, mnist_batch):
    model, _, _ = lenet_mnist
    x, y = mnist_batch
    clean = model(x).argmax(1) == y
    outcomes = {0.3: [AttackOutcome("attack A", clean.clone()), AttackOutcome("attack B", torch.zeros_like(clean))]}
    checks = masking_diagnostics(model, x, y, outcomes, clean, effort_n=0)
    assert {d.name.split(" (")[0] for d in checks} == NEW_CHECKS - {"accuracy keeps falling with more restarts or "
                                                                    "steps"}
    assert by_name(checks)["a stronger attack breaks what a weaker one left"].fired


def test_suite_outcomes_follow_the_nested_balls():
    from advlab.evaluation.robust import RobustEvaluation

    broken = {"fgsm": torch.tensor([0.0, 0.1, math.inf]), "pgd": torch.tensor([0.0, 0.1, 0.2])}
    robust = RobustEvaluation([0.1, 0.2], {}, broken, 2 / 3, 3)
    out = suite_outcomes(robust, {"fgsm": "FGSM", "pgd": "PGD"}, single_step={"fgsm"})
    assert out[0.2][0].single_step and out[0.2][0].robust.tolist() == [False, False, True]
    assert out[0.2][1].robust.tolist() == [False, False, False] and out[0.1][1].robust.tolist() == [False, False, True]
