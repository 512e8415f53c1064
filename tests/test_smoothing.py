"""Randomized smoothing (Cohen et al. 2019): closed-form oracles, coverage of the bound, noise training,
an empirical attack inside the certified radius, and sharded certification."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import beta, binom, binomtest, norm
from torch import nn

from advlab.defenses.noise import GaussianNoiseLoss, noise_config, train_noise_model
from advlab.defenses.smoothing import ABSTAIN, Smooth, certified_radius, clopper_pearson_lower, radius_ceiling
from advlab.errors import AdvlabError
from advlab.evaluation.certified import certify_dataset
from advlab.training import config_hash, default_config


class LinearBinary(nn.Module):
    """f(x) = 1[w.x + b > 0] as two logits; its smoothed classifier is known in closed form:
    p_A = Phi(|w.x + b| / (sigma ||w||)) and the exact L2 radius of g is |w.x + b| / ||w||."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w = nn.Parameter(w.flatten().clone(), requires_grad=False)
        self.b = b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(score), score], 1)


def linear_case(margin: float, shape=(3, 32, 32), seed: int = 0) -> tuple[LinearBinary, torch.Tensor]:
    """A unit-norm w and an image x in [0, 1] at signed distance `margin` from the boundary."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(math.prod(shape), generator=gen)
    w /= w.norm()
    x = torch.rand(shape, generator=gen) * 0.5 + 0.25
    b = margin - float(x.flatten() @ w)
    return LinearBinary(w, b), x


# --- the bound and the radius ---------------------------------------------------------------------

def test_deterministic_oracle_pinned_values():
    p_low = clopper_pearson_lower(97725, 100_000, 0.001)
    assert p_low == pytest.approx(0.97576, abs=1e-5)
    assert certified_radius(p_low, 0.25) == pytest.approx(0.4933, abs=1e-4)
    assert clopper_pearson_lower(0, 100, 0.001) == 0.0
    # the ceiling: all n samples agree; 3.81 sigma at n = 1e5, 2.46 sigma at n = 1000 (alpha = 1e-3)
    assert radius_ceiling(1.0, 100_000, 0.001) == pytest.approx(3.81, abs=0.005)
    assert radius_ceiling(1.0, 1000, 0.001) == pytest.approx(2.46, abs=0.005)
    assert clopper_pearson_lower(1000, 1000, 0.001) == pytest.approx(0.001 ** (1 / 1000))


@pytest.mark.parametrize("k,n", [(1, 10), (50, 100), (977, 1000), (99_000, 100_000)])
def test_clopper_pearson_matches_scipy_exact_interval(k, n):
    # the one-sided bound at alpha is the lower end of the two-sided exact interval at level 1 - 2 alpha
    two_sided = binomtest(k, n).proportion_ci(confidence_level=1 - 2 * 0.001, method="exact").low
    assert clopper_pearson_lower(k, n, 0.001) == pytest.approx(two_sided, rel=1e-9)
    assert clopper_pearson_lower(k, n, 0.001) == pytest.approx(beta.ppf(0.001, k, n - k + 1), rel=1e-12)


# --- the linear oracle ----------------------------------------------------------------------------

def test_linear_classifier_radius_never_exceeds_truth_and_approaches_it():
    sigma, margin = 0.25, 0.5
    # the oracle is usually stated at D = 3072; the smoothed answer depends on D only through the margin
    # (w.delta ~ N(0, sigma^2) for unit w), so a 256-pixel image gives the same distribution at 12x less noise
    model, x = linear_case(margin, shape=(1, 16, 16))
    radii = []
    for n in (1000, 10_000, 100_000):
        gen = torch.Generator().manual_seed(n)
        pred, radius = Smooth(model, 2, sigma).certify(x, 100, n, 0.001, batch_size=10_000, generator=gen)
        assert pred == 1
        radii.append(radius)
    assert radii[0] < radii[1] < radii[2] <= margin
    # closed form: n = 1e5, alpha = 1e-3, sigma 0.25, margin 0.5 -> R in about [0.489, 0.496] (4 standard
    # deviations of the count: [0.482, 0.5]); never above the margin
    assert 0.482 <= radii[2] <= margin
    # the expected gap shrinks with n: p_A = Phi(2) and the bound at the expected count
    p_a = norm.cdf(margin / sigma)
    for n, radius in zip((1000, 10_000, 100_000), radii, strict=True):
        expected = certified_radius(clopper_pearson_lower(round(p_a * n), n, 0.001), sigma)
        assert abs(radius - expected) < 4 * sigma * math.sqrt(p_a * (1 - p_a) / n) / norm.pdf(norm.ppf(p_a)) + 1e-3


def test_linear_classifier_far_from_boundary_hits_the_ceiling_and_other_side():
    sigma = 0.25
    model, x = linear_case(1.0, shape=(1, 8, 8), seed=1)  # the answer depends on D only through the margin
    pred, radius = Smooth(model, 2, sigma).certify(x, 100, 100_000, 0.001, 10_000, torch.Generator().manual_seed(1))
    assert pred == 1
    # p_A = Phi(4): about 3 of 1e5 samples fall across, giving R about 0.905-0.913 (closed form); 10 or
    # more (R < 0.876) happen with probability 0.002. The ceiling (no failures) is 0.953 < 1.0.
    assert 0.876 <= radius <= radius_ceiling(sigma, 100_000, 0.001) < 1.0
    model, x = linear_case(-0.3, seed=2)
    pred, radius = Smooth(model, 2, sigma).certify(x, 100, 10_000, 0.001, 10_000, torch.Generator().manual_seed(2))
    assert pred == 0 and 0.0 < radius <= 0.3


def test_predict_abstains_on_the_boundary_and_answers_away_from_it():
    sigma = 0.25
    model, x = linear_case(0.0, shape=(1, 8, 8), seed=3)
    smooth = Smooth(model, 2, sigma)
    gen = torch.Generator().manual_seed(3)
    answers = [smooth.predict(x, 1000, 0.001, 1000, gen) for _ in range(30)]
    # under p_A = 1/2 the test answers with probability <= alpha: 30 draws all abstain w.p. >= 0.97
    assert answers.count(ABSTAIN) >= 29
    model, x = linear_case(0.2, shape=(1, 8, 8), seed=3)
    assert Smooth(model, 2, sigma).predict(x, 1000, 0.001, 1000, gen) == 1


def test_certify_abstains_when_the_top_class_is_not_a_majority():
    model, x = linear_case(0.0, seed=4)
    pred, radius = Smooth(model, 2, 0.25).certify(x, 100, 2000, 0.001, 2000, torch.Generator().manual_seed(4))
    assert (pred, radius) == (ABSTAIN, 0.0)


# --- coverage: the bound fails at most alpha of the time -----------------------------------------

def test_lower_bound_fails_no_more_often_than_alpha():
    """2,000 independent certifications of a case with p_A = 0.9 at alpha = 0.05, n = 100. The bound
    fails (radius above the true one) with probability <= alpha per run, so the failure count is
    stochastically below Binomial(2000, 0.05); we allow its 1 - 1e-4 quantile (136), a test that
    wrongly fails with probability < 1e-4. The naive point estimate fails about 45% of the time
    (power check: the test can see an anti-conservative bound)."""
    sigma, p_a, alpha, n, runs = 0.25, 0.9, 0.05, 100, 2000
    margin = sigma * norm.ppf(p_a)
    model, x = linear_case(margin, shape=(1, 2, 2), seed=5)
    smooth = Smooth(model, 2, sigma)
    gen = torch.Generator().manual_seed(5)
    failures = naive_failures = 0
    for _ in range(runs):
        pred, radius = smooth.certify(x, 10, n, alpha, n, gen)
        failures += pred != ABSTAIN and (pred != 1 or radius > margin)
        naive_failures += smooth.sample_counts(x, n, n, gen)[1] / n > p_a
    allowed = binom.ppf(1 - 1e-4, runs, alpha)
    assert failures <= allowed, f"{failures} failures in {runs} runs exceed {allowed:.0f} (alpha = {alpha})"
    assert naive_failures > 0.3 * runs


def test_sample_counts_are_reproducible_with_a_seed_and_checked():
    model, x = linear_case(0.1, shape=(1, 4, 4), seed=6)
    smooth = Smooth(model, 2, 0.5)
    a = smooth.sample_counts(x, 500, 128, torch.Generator().manual_seed(7))
    b = smooth.sample_counts(x, 500, 128, torch.Generator().manual_seed(7))
    c = smooth.sample_counts(x, 500, 500, torch.Generator().manual_seed(8))
    assert a.sum() == 500 and (a == b).all() and not (a == c).all()
    with pytest.raises(AdvlabError, match=r"\(C, H, W\)"):
        smooth.certify(x.unsqueeze(0), 10, 10, 0.001, 10)
    with pytest.raises(AdvlabError, match=r"\[0, 1\]"):
        smooth.certify(x + 2, 10, 10, 0.001, 10)
    with pytest.raises(AdvlabError, match="alpha"):
        smooth.certify(x, 10, 10, 0.0, 10)
    with pytest.raises(AdvlabError, match="n0"):
        smooth.certify(x, 0, 10, 0.001, 10)
    with pytest.raises(AdvlabError, match="sigma"):
        Smooth(model, 2, -0.25)


def test_base_model_mode_is_restored():
    model, x = linear_case(0.1, shape=(1, 4, 4))
    model.train()
    Smooth(model, 2, 0.25).predict(x, 100, 0.01, 50)
    assert model.training


# --- noise training --------------------------------------------------------------------------------

class Recorder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[torch.Tensor] = []
        self.linear = nn.Linear(4, 2)

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        return self.linear(x.flatten(1)[:, :4])


def test_noise_loss_adds_fresh_gaussian_noise_of_sigma():
    x = torch.full((256, 1, 8, 8), 0.5)
    y = torch.zeros(256, dtype=torch.long)
    model = Recorder()
    loss_fn = GaussianNoiseLoss(0.25, seed=0)
    loss, logits = loss_fn(model, x, y)
    loss_fn(model, x, y)
    first, second = (inp - x for inp in model.inputs)
    assert first.std().item() == pytest.approx(0.25, rel=0.02) and abs(first.mean().item()) < 0.01
    assert not torch.equal(first, second)  # fresh every batch
    assert loss.item() == pytest.approx(F.cross_entropy(logits, y).item())
    again = Recorder()
    GaussianNoiseLoss(0.25, seed=0)(again, x, y)
    assert torch.equal(again.inputs[0], model.inputs[0])  # seeded
    with pytest.raises(AdvlabError, match="sigma"):
        GaussianNoiseLoss(0.0)


@pytest.fixture(scope="module")
def noisy_lenet(mnist_train, mnist_test):
    """LeNet noise-trained at sigma 0.25 on 6,000 MNIST images for 2 epochs (seconds)."""
    config = noise_config("mnist", 0.25, model="lenet", epochs=2, train_subset=6000, lr=3e-3)
    model, meta, path, _ = train_noise_model(config, torch.device("cpu"), progress=False,
                                             train_data=mnist_train, test_data=mnist_test)
    return model.eval(), meta, path


def test_noise_training_records_the_recipe_and_keys_the_cache(noisy_lenet):
    model, meta, path = noisy_lenet
    assert meta["recipe"] == {"method": "noise", "sigma": 0.25}
    assert meta["train_config"]["recipe"] == meta["recipe"]
    plain = default_config("mnist", model="lenet", epochs=2, train_subset=6000, lr=3e-3)
    noisy = noise_config("mnist", 0.25, model="lenet", epochs=2, train_subset=6000, lr=3e-3)
    assert config_hash(plain) != config_hash(noisy) != config_hash(noise_config("mnist", 0.5, model="lenet",
                                                                                 epochs=2, train_subset=6000, lr=3e-3))
    assert meta["test_accuracy"] > 0.85
    with pytest.raises(AdvlabError, match="recipe"):
        train_noise_model(plain, torch.device("cpu"))


# --- empirical check: PGD on the smoothed classifier inside the certified radius -------------------

def smoothed_pgd_l2(smooth: Smooth, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor, steps: int = 12,
                    samples: int = 64, seed: int = 0) -> torch.Tensor:
    """L2 PGD on -log E_delta[softmax f(x + delta)]_y (SmoothAdv, Salman et al. 2019) with a
    per-image budget eps, projected onto the ball and the [0, 1] box."""
    gen = torch.Generator().manual_seed(seed)
    view = (-1, 1, 1, 1)
    step = 2.5 * eps / steps
    adv = x.clone()
    for _ in range(steps):
        adv.requires_grad_(True)
        probs = smooth.noise_probabilities(adv, samples, gen)
        loss = -probs.gather(1, y[:, None]).clamp_min(1e-12).log().sum()
        (grad,) = torch.autograd.grad(loss, adv)
        grad = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(view)
        adv = adv.detach() + step.view(view) * grad
        delta = adv - x
        delta = delta * (eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp(max=1.0).view(view)
        adv = (x + delta).clamp(0, 1)
    return adv.detach()


def test_smoothed_pgd_inside_certified_radius_does_not_change_the_prediction(noisy_lenet, mnist_test):
    model, _, _ = noisy_lenet
    for p in model.parameters():
        p.requires_grad_(False)
    smooth = Smooth(model, 10, 0.25)
    x, y = mnist_test.tensors(10)
    result = certify_dataset(smooth, mnist_test.head(10), n0=50, n=1000, alpha=0.001, batch_size=1000,
                             progress=False)
    keep = [r.index for r in result.records if r.correct and r.radius >= 0.3]
    assert len(keep) >= 5, result.records
    radius = torch.tensor([result.records[i].radius for i in keep])
    eps = 0.8 * radius
    adv = smoothed_pgd_l2(smooth, x[keep], y[keep], eps, steps=10, samples=32)
    assert ((adv - x[keep]).flatten(1).norm(dim=1) <= eps + 1e-5).all()
    gen = torch.Generator().manual_seed(11)
    drops = []
    for j, i in enumerate(keep):
        clean = smooth.sample_counts(x[i], 1000, 1000, gen)
        attacked = smooth.sample_counts(adv[j], 1000, 1000, gen)
        assert attacked.argmax() == int(y[i]), f"image {i}: counts {attacked} after an attack of {eps[j]:.3f}"
        assert smooth.predict(adv[j], 1000, 0.001, 1000, gen) in (int(y[i]), ABSTAIN)
        drops.append(clean[int(y[i])] - attacked[int(y[i])])
    # the attack does work against the noise expectation: the top-class count falls on average
    assert np.mean(drops) > 0


# --- sharding ----------------------------------------------------------------------------------------

def test_sharded_certification_equals_one_process_for_the_same_seed(mnist_test):
    model, _ = linear_case(0.0, shape=(1, 28, 28), seed=9)
    smooth = Smooth(model, 2, 0.5)
    data = mnist_test.head(9)
    data.labels = (data.labels % 2).clone()
    whole = certify_dataset(smooth, data, 20, 200, 0.01, 100, seed=3, progress=False)
    parts = [certify_dataset(smooth, data, 20, 200, 0.01, 100, seed=3, progress=False, rank=r, world_size=3)
             for r in range(3)]
    merged = sorted((rec for part in parts for rec in part.records), key=lambda r: r.index)
    assert [r.index for r in parts[1].records] == [1, 4, 7]
    key = [(r.index, r.prediction, r.radius) for r in whole.records]
    assert [(r.index, r.prediction, r.radius) for r in merged] == key
    assert len({r.radius for r in whole.records}) > 1  # distinct images get distinct answers
