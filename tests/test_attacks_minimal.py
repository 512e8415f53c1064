"""Minimal-perturbation attacks (DeepFool, C&W L2, L-BFGS) and fooling images: closed forms on a
linear classifier, smaller perturbations than FGSM at equal success, and the C&W box."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlab.attacks import FGSM, LBFGS, CarliniWagnerL2, DeepFool, FoolingImages


def centred_linear_model(d: int = 16, classes: int = 2, seed: int = 0) -> nn.Module:
    """A linear classifier on 4x4 images whose every decision boundary passes through the gray image."""
    torch.manual_seed(seed)
    layer = nn.Linear(d, classes)
    with torch.no_grad():
        layer.weight.mul_(0.5)
        layer.bias.copy_(-0.5 * layer.weight.sum(1))  # every boundary passes through the gray image 0.5
    return nn.Sequential(nn.Flatten(), layer).eval()


def linear_inputs(model, n: int = 8, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = 0.5 + 0.05 * (torch.rand(n, 1, 4, 4, generator=g) - 0.5)
    with torch.no_grad():
        y = model(x).argmax(1)
    return x, y


@pytest.fixture(scope="module")
def mnist_first24(mnist_test):
    """The first 24 MNIST test images (this module's own size; conftest's mnist_batch holds 64)."""
    return mnist_test.tensors(24)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_deepfool_distance_to_linear_boundary(norm):
    """For f(x) = w.x + b the minimal distance is |f(x)| / ||w||_2 (L2), |f(x)| / ||w||_1 (Linf)."""
    model = centred_linear_model()
    x, y = linear_inputs(model)
    w = (model[1].weight[1] - model[1].weight[0]).detach()
    with torch.no_grad():
        f = model(x) @ torch.tensor([-1.0, 1.0])
    dual = w.norm() if norm == "l2" else w.abs().sum()
    result = DeepFool(overshoot=0.0, norm=norm)(model, x, y)
    assert result.success.all()
    # One linearization step lands on the boundary, plus DeepFool's 1e-4 in f to cross it.
    assert torch.allclose(result.norms[norm], (f.abs() + 1e-4) / dual, rtol=1e-4, atol=1e-6)
    assert bool((result.norms[norm] >= f.abs() / dual).all())


def test_deepfool_and_cw_smaller_than_fgsm_at_equal_success(lenet_mnist, mnist_first24):
    model, _, _ = lenet_mnist
    x, y = mnist_first24
    fgsm = FGSM(eps=0.3)(model, x, y)
    deepfool = DeepFool()(model, x, y)
    cw = CarliniWagnerL2(steps=50, binary_search_steps=2)(model, x, y)
    assert deepfool.success_rate == 1.0 and cw.success_rate >= 0.95
    both = fgsm.success & deepfool.success & cw.success & fgsm.clean_correct
    assert both.sum() >= 10
    l2 = {k: r.norms["l2"][both] for k, r in (("fgsm", fgsm), ("deepfool", deepfool), ("cw", cw))}
    assert bool((l2["deepfool"] < l2["fgsm"]).all()) and bool((l2["cw"] < l2["fgsm"]).all())
    assert l2["cw"].median() < l2["deepfool"].median()


def test_deepfool_targeted_hits_target(lenet_mnist, mnist_first24):
    model, _, _ = lenet_mnist
    x, y = mnist_first24
    target = (y + 3) % 10
    result = DeepFool()(model, x, y, target=target)
    assert result.success_rate >= 0.95
    assert torch.equal(result.success, result.adv_pred == target)


def test_cw_moves_pixels_sitting_at_zero_and_stays_in_box(lenet_mnist, mnist_first24):
    """Most MNIST pixels are exactly 0; the tanh change of variables freezes them, ours must not."""
    model, _, _ = lenet_mnist
    x, y = mnist_first24
    result = CarliniWagnerL2(steps=40, binary_search_steps=1)(model, x, y)
    at_zero = x == 0
    moved = ((result.adv - x).abs() > 1e-3) & at_zero
    assert at_zero.sum() > 0.5 * x.numel()
    assert moved.sum() > 0.05 * at_zero.sum()
    assert float(result.adv.min()) >= 0.0 and float(result.adv.max()) <= 1.0
    assert result.cost.forward == result.cost.backward > 0


def test_cw_targeted_with_confidence(lenet_mnist, mnist_first24):
    model, _, _ = lenet_mnist
    x, y = mnist_first24
    target = (y + 3) % 10
    result = CarliniWagnerL2(steps=60, binary_search_steps=2, kappa=2.0)(model, x[:12], y[:12], target=target[:12])
    assert result.success_rate >= 0.9
    with torch.no_grad():
        logits = model(result.adv[result.success])
    t = target[:12][result.success]
    others = logits.scatter(1, t[:, None], float("-inf")).amax(1)
    assert bool((logits.gather(1, t[:, None]).squeeze(1) - others >= 2.0 - 1e-3).all())


def test_lbfgs_targeted_on_linear_model_is_minimal():
    """On a linear model the L-BFGS optimum approaches the boundary: its L2 is close to the
    closed-form distance and far below FGSM's at equal success."""
    model = centred_linear_model(classes=3)
    x, y = linear_inputs(model, n=6)
    target = (y + 1) % 3
    result = LBFGS(binary_search_steps=8, max_iter=50)(model, x, y, target=target)
    assert result.success.all()
    fgsm = FGSM(eps=0.5, norm="l2")(model, x, y, target=target)
    w = model[1].weight.detach()
    with torch.no_grad():
        logits = model(x)
    idx = torch.arange(len(x))
    # Crossing into the target needs at least the distance to the (y, target) hyperplane.
    lower = (logits[idx, y] - logits[idx, target]) / (w[target] - w[y]).norm(dim=1)
    assert bool((result.norms["l2"] >= lower - 1e-4).all())
    assert bool((result.norms["l2"] <= 1.5 * lower + 1e-3).all())
    assert bool((result.norms["l2"][fgsm.success] <= fgsm.norms["l2"][fgsm.success]).all())


def test_fooling_images_reach_their_class(lenet_mnist):
    model, _, _ = lenet_mnist
    noise_only = FoolingImages(eps=0.0)(model, (1, 28, 28), per_class=6)
    fooled = FoolingImages(eps=0.3, steps=5)(model, (1, 28, 28), per_class=6)
    assert fooled.images.shape == (60, 1, 28, 28)
    assert float(fooled.images.min()) >= 0 and float(fooled.images.max()) <= 1
    assert fooled.share > noise_only.share
    assert fooled.share > 0.5
    per_class = fooled.share_per_class()
    assert set(per_class) == set(range(10))
    assert abs(sum(per_class.values()) / 10 - fooled.share) < 1e-6
