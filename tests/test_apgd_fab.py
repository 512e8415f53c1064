"""APGD and FAB: the paper's step-size checkpoints, the DLR losses against hand-computed values, FAB's
exact minimal distance on linear classifiers, EOT on a randomized model, and the CLI entries."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest
import torch
from torch import nn

from advlab.attacks import APGD, FAB, PGD, APGDTargeted, build_attack
from advlab.attacks.apgd import checkpoint_fractions, dlr_loss, is_randomized, step_checkpoints, targeted_dlr_loss
from advlab.attacks.fab import project_hyperplane_box
from advlab.cli.main import main


def test_step_size_checkpoints_are_the_papers():
    # p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06) (Croce & Hein 2020, sec. 3.2)
    assert checkpoint_fractions()[:9] == [Fraction(x, 100) for x in (0, 22, 41, 57, 70, 80, 87, 93, 99)]
    assert step_checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]
    assert step_checkpoints(10) == [0, 3, 5, 6, 7, 8, 9, 10]  # ceil(p_j * 10), duplicates dropped


def test_dlr_and_targeted_dlr_against_hand_computed_values():
    z = torch.tensor([[5.0, 3.0, 1.0, 0.0, -1.0]])
    # DLR = -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)
    assert dlr_loss(z, torch.tensor([0])).item() == pytest.approx(-(5 - 3) / (5 - 1))
    assert dlr_loss(z, torch.tensor([2])).item() == pytest.approx(-(1 - 5) / (5 - 1))
    # targeted DLR = -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)
    assert targeted_dlr_loss(z, torch.tensor([0]), torch.tensor([1])).item() == pytest.approx(-(5 - 3) / (5 - 0.5))
    assert targeted_dlr_loss(z, torch.tensor([1]), torch.tensor([4])).item() == pytest.approx(-(3 + 1) / (5 - 0.5))
    # invariant to shifting and scaling the logits
    assert dlr_loss(3 * z + 7, torch.tensor([0])).item() == pytest.approx(-0.5)


def _linear(w: torch.Tensor, b: torch.Tensor) -> nn.Module:
    model = nn.Sequential(nn.Flatten(), nn.Linear(w.shape[1], w.shape[0]))
    model[1].weight.data, model[1].bias.data = w.clone(), b.clone()
    return model


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("targeted", [False, True])
def test_fab_finds_the_exact_minimal_distance_on_a_linear_classifier(norm, targeted):
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(2, 196, generator=gen) * 0.1
    b = torch.tensor([0.3, -0.3])
    model = _linear(w, b)
    # images near 0.5 and a boundary close by: no coordinate reaches the [0, 1] box, the answer is closed form
    x = 0.5 + 0.01 * torch.randn(6, 1, 14, 14, generator=gen)
    y = model(x).argmax(1)
    diff_w, diff_b = w[1] - w[0], b[1] - b[0]
    dual = diff_w.abs().sum() if norm == "linf" else diff_w.norm()
    exact = (x.flatten(1) @ diff_w + diff_b).abs() / dual  # |w.x + b| / ||w||_dual
    assert exact.max() < 0.2 if norm == "linf" else True
    result = FAB(norm=norm, steps=50)(model, x, y, target=(1 - y) if targeted else None)
    assert result.success.all()
    assert torch.allclose(result.norms[norm], exact, atol=1e-4)


def test_projection_onto_hyperplane_and_box_is_optimal_when_the_box_binds():
    # w = (1, 1), p = (0.9, 0.1), reach <w, d> = 0.5: L2 would move both by 0.25, but the first has 0.1 of room
    p, w, r = torch.tensor([[0.9, 0.1]]), torch.tensor([[1.0, 1.0]]), torch.tensor([0.5])
    d2 = project_hyperplane_box(p, w, r, "l2")
    assert torch.allclose(d2, torch.tensor([[0.1, 0.4]]), atol=1e-6)
    dinf = project_hyperplane_box(p, w, r, "linf")
    assert torch.allclose(dinf, torch.tensor([[0.1, 0.4]]), atol=1e-6)
    far = project_hyperplane_box(p, w, torch.tensor([5.0]), "l2")  # unreachable: the box corner toward it
    assert torch.allclose(far, torch.tensor([[0.1, 0.9]]), atol=1e-6)


@pytest.mark.parametrize("norm, eps", [("linf", 0.3), ("l2", 3.0)])
def test_apgd_breaks_lenet_within_the_bound(lenet_mnist, mnist_batch, norm, eps):
    model, _, _ = lenet_mnist
    x, y = mnist_batch
    x, y = x[:32], y[:32]
    for attack in (APGD(eps=eps, norm=norm, steps=20), APGD(eps=eps, norm=norm, steps=20, loss="dlr"),
                   APGDTargeted(eps=eps, norm=norm, steps=20, targets=3)):
        result = attack(model, x, y)
        assert result.robust_accuracy < 0.1
        size = result.norms[norm]
        assert (size <= eps * (1 + 1e-6)).all() and result.adv.min() >= 0 and result.adv.max() <= 1
        steps = result.extra["broke_at_step"]
        assert ((steps >= 0) == (result.adv_pred != y)).all()


def test_apgd_early_stop_is_never_weaker_and_spends_less(lenet_mnist, mnist_batch):
    model, _, _ = lenet_mnist
    x, y = mnist_batch
    full = APGD(eps=0.1, steps=20, early_stop=False)(model, x, y)
    early = APGD(eps=0.1, steps=20)(model, x, y)
    # the same trajectory until a sample breaks, so early stopping breaks every sample the full run broke
    assert (early.success | ~full.success).all()
    assert early.cost.backward < full.cost.backward
    pgd = PGD(eps=0.1, steps=20, seed=0)(model, x, y)
    assert early.robust_accuracy <= pgd.robust_accuracy + 0.1  # APGD is at least about as strong as PGD


class NoisyModel(nn.Module):
    """A randomized classifier: Gaussian noise added to its input in every forward pass, eval mode too."""

    def __init__(self, inner: nn.Module, sigma: float = 0.1) -> None:
        super().__init__()
        self.inner, self.sigma = inner, sigma

    def forward(self, x):
        return self.inner(x + self.sigma * torch.randn_like(x))


def test_eot_averages_gradients_over_draws(lenet_mnist, mnist_batch):
    model, _, _ = lenet_mnist
    x, y = mnist_batch
    noisy = NoisyModel(model)
    assert is_randomized(noisy, x[:4]) and not is_randomized(model, x[:4])
    attack = APGD(eps=0.05, steps=3, eot=5, early_stop=False)
    result = attack(noisy, x[:8], y[:8])
    attacked = int((result.clean_pred == y[:8]).sum())
    assert result.cost.backward == attacked * (3 + 1) * 5  # (steps + 1) gradient evaluations x 5 draws


def test_attack_cli_runs_apgd_and_fab(lenet_mnist, tmp_path):
    _, _, path = lenet_mnist
    for name in ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t"):
        js = tmp_path / f"{name}.json"
        code = main(["attack", "--model", str(path), "--attack", name, "--eps", "0.3", "--n", "8", "--steps", "5",
                     "--out", str(tmp_path / name), "--json", str(js), "--no-progress"])
        assert code == 0
        summary = json.loads(js.read_text())
        assert summary["success_rate_on_correct"] > 0.5
    assert isinstance(build_attack("fab-t", norm="l2"), FAB)
