"""The rand suite on a randomized linear model whose answer is known in closed form: APGD with EOT leaves a
sample only once its averaged logits were misclassified on `confirm` steps in a row, returns a point that the
noise-free (expected) logits misclassify, and the suite's records judge by the logits averaged over fresh
draws, so a sample that single draws often misclassify but the expectation does not stays robust."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlab.attacks.apgd import APGD
from advlab.errors import AdvlabError
from advlab.evaluation.suite import SuiteConfig, run_suite

EPS = 0.2
NOISE = 0.25  # input noise; the margin z_0 - z_1 = 9 - sum(x + noise) then has standard deviation 0.25 * 4 = 1


class NoisyLinear(nn.Module):
    """Three classes on 1x4x4 images: z_0 = 9, z_1 = sum(x'), z_2 = -sum(x') - 100 with x' = x + N(0, NOISE^2)
    per pixel. The expected margin of class 0 over class 1 is 9 - sum(x); a Linf perturbation of size EPS lowers
    it by at most 16 EPS = 3.2 (all pixels up by EPS), each draw adds a N(0, 1) to it."""

    def forward(self, x):
        s = (x + NOISE * torch.randn_like(x)).flatten(1).sum(1)
        return torch.stack([torch.full_like(s, 9.0), s, -s - 100.0], 1)


def expected_margin(x):
    return 9.0 - x.flatten(1).sum(1)


def images(best_margins):
    """One constant image per entry whose best attainable expected margin (closed form) is that value."""
    values = [(9.0 - m - 16 * EPS) / 16 for m in best_margins]
    return torch.tensor(values).view(-1, 1, 1, 1).expand(-1, 1, 4, 4).contiguous(), torch.zeros(len(values),
                                                                                                   dtype=torch.long)


def test_images_have_the_margins_they_claim():
    x, _ = images([-1.6, 1.0])
    assert torch.allclose(expected_margin(x) - 16 * EPS, torch.tensor([-1.6, 1.0]), atol=1e-5)
    assert (x >= 0).all() and (x + EPS <= 1).all()  # the box does not bind: the optimum is all pixels up by EPS


def test_apgd_with_eot_confirms_before_leaving_and_returns_a_point_the_expectation_misclassifies():
    torch.manual_seed(0)
    x, y = images([-1.6] * 4)  # clean expected margin +1.6, best attainable -1.6: breakable, 1.6 standard deviations
    steps, eot, confirm = 30, 4, 5
    result = APGD(eps=EPS, steps=steps, eot=eot, confirm=confirm)(NoisyLinear(), x, y)
    calls = result.extra["gradient_calls"]
    # each left early, and not before `confirm` steps had met the goal (the start counts as one step)
    assert (calls >= confirm * eot).all() and (calls < (steps + 1) * eot).all()
    # the returned point lies deep in the adversarial region of the expected logits (the optimum is -1.6)
    assert (expected_margin(result.adv) < -0.8).all()
    assert (result.adv - x).abs().amax() <= EPS + 1e-6


def test_confirm_one_keeps_the_first_crossing_and_leaves_at_once():
    torch.manual_seed(0)
    x, y = images([-1.6] * 4)
    first = APGD(eps=EPS, steps=30, eot=4, confirm=1)(NoisyLinear(), x, y)
    assert (first.extra["gradient_calls"] <= 4 * (first.extra["broke_at_step"] + 1)).all()


def test_rand_suite_records_judge_by_fresh_draws():
    torch.manual_seed(0)
    # four breakable images (expected margin 1.6 clean, -1.6 at best) and four that single draws misclassify
    # about one time in six at the attacker's best point (expected margin +1.0), but 20 averaged draws only
    # 4.5 standard deviations out (about 3 in a million)
    x, y = images([-1.6] * 4 + [1.0] * 4)
    cfg = SuiteConfig(steps=30, eot=4, confirm=3, verdict_draws=20)
    ev = run_suite(NoisyLinear(), x, y, [EPS], suite="rand", config=cfg, progress=False, diagnostics=False,
                   keep_adversarial=True)
    assert ev.randomized and ev.clean_accuracy == 1.0
    broken = [r["broken_by"] not in ("", "clean") for r in ev.per_sample()]
    assert broken == [True] * 4 + [False] * 4
    assert ev.robust_accuracy() == [0.5]
    assert (expected_margin(ev.adversarial[:4]) < -0.8).all()
    # where nothing broke it, the attack's most damaging point (expected margin +1.0 at best, 4.2 clean), which
    # single draws misclassify about one time in six (kept when at least one of the 20 verdict draws did: each
    # image about 97 times in 100)
    assert (expected_margin(ev.adversarial[4:]) < 2.0).sum() >= 2
    torch.manual_seed(0)
    cfg.keep_best_point = False
    clean = run_suite(NoisyLinear(), x, y, [EPS], suite="rand", config=cfg, progress=False, diagnostics=False,
                      keep_adversarial=True)
    assert torch.equal(clean.adversarial[4:], x[4:])  # the clean image, as AutoAttack returns
    assert any("fresh draws" in note for note in ev.notes)
    # the verdict's forward passes are counted, apart from the gradient calls
    cost = ev.cost["APGD-CE"]
    assert cost.forward >= cost.backward + 8 * 20


def test_bad_rand_settings_are_refused():
    with pytest.raises(AdvlabError, match="confirm"):
        APGD(eot=4, confirm=0)
    with pytest.raises(AdvlabError, match="rand suite members"):
        SuiteConfig(rand_members=("apgd-t",))
    with pytest.raises(AdvlabError, match="verdict_draws"):
        SuiteConfig(verdict_draws=-1)
