"""Physical-world attacks: transformations, EOT, the print-and-photo simulation, destruction rate, patch."""

from __future__ import annotations

import json

import pytest
import torch

from advlab.attacks import PGD
from advlab.attacks.physical import (
    EOTPGD,
    PrintPhotoSimulation,
    PrintPhotoTransforms,
    UniversalPatch,
    destruction_rate,
    measure_destruction,
    patch_success_rate,
    place_patch,
)
from advlab.attacks.physical.eot import expected_success
from advlab.attacks.physical.patch import patch_side, sample_placements
from advlab.cli.main import main
from advlab.errors import AdvlabError


@pytest.fixture(scope="module")
def batch(mnist_test):
    return mnist_test.tensors(24)


@pytest.mark.parametrize("channels", [1, 3])
def test_transforms_stay_in_the_box_and_are_differentiable(channels):
    torch.manual_seed(0)
    x = torch.rand(6, channels, 28, 28, requires_grad=True)
    strong = PrintPhotoTransforms(rotation=30, brightness=0.5, contrast=(0.3, 2.0), noise=0.3, jpeg_probability=1.0)
    out = strong(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape
    assert out.min() >= 0 and out.max() <= 1
    (out * torch.randn_like(out)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert (x.grad.flatten(1).abs().sum(1) > 0).all()  # every image gets a gradient


def test_transforms_are_random_per_image_reproducible_by_seed_and_identity_is_identity(batch):
    x, _ = batch
    t = PrintPhotoTransforms()
    a, b = t(x, torch.Generator().manual_seed(5)), t(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert not torch.allclose(a, t(x, torch.Generator().manual_seed(6)))
    assert (a - x).abs().mean() > 0.01
    assert torch.allclose(PrintPhotoTransforms.identity()(x), x, atol=1e-6)


def test_transform_ranges_are_checked():
    with pytest.raises(AdvlabError, match="scale"):
        PrintPhotoTransforms(scale=(1.2, 0.8))
    with pytest.raises(AdvlabError, match="jpeg"):
        PrintPhotoTransforms(jpeg=(0, 50))


@pytest.mark.parametrize("norm,eps", [("linf", 0.2), ("l2", 1.5)])
def test_eot_respects_its_bound(lenet_mnist, batch, norm, eps):
    model = lenet_mnist[0]
    x, y = batch
    result = EOTPGD(eps=eps, norm=norm, steps=4, samples=2, seed=0)(model, x[:8], y[:8])
    assert (result.norms[norm] <= eps + 1e-6).all()
    assert result.adv.min() >= 0 and result.adv.max() <= 1
    assert result.cost.forward == 8 * 4 * 2 and result.cost.backward == 8 * 4 * 2


def test_eot_with_identity_and_one_sample_is_pgd(lenet_mnist, batch):
    model = lenet_mnist[0]
    x, y = batch
    eot = EOTPGD(eps=0.1, steps=4, samples=1, transforms=PrintPhotoTransforms.identity(), random_start=False)
    pgd = PGD(eps=0.1, steps=4, random_start=False)
    assert torch.allclose(eot(model, x, y).adv, pgd(model, x, y).adv, atol=1e-6)


def test_eot_survives_sampled_transformations_better_than_pgd(lenet_mnist, batch):
    model = lenet_mnist[0]
    x, y = batch
    x, y = x[:16], y[:16]
    t = PrintPhotoTransforms(jpeg=None)  # the differentiable JPEG is the slow part; geometry matters most
    pgd = PGD(eps=0.15, steps=8, seed=0)(model, x, y)
    eot = EOTPGD(eps=0.15, steps=8, samples=4, transforms=t, seed=0)(model, x, y)
    held_out = dict(draws=4, seed=123)  # transformations the attack did not sample
    # among each attack's digital successes, the share of transformed copies still adversarial
    pgd_survival = expected_success(model, pgd.adv, y, t, **held_out)[pgd.success].mean()
    eot_survival = expected_success(model, eot.adv, y, t, **held_out)[eot.success].mean()
    assert eot_survival > pgd_survival + 0.08


def test_simulation_changes_pixels_and_is_deterministic_given_a_seed(batch):
    x, _ = batch
    sim = PrintPhotoSimulation()
    a, b, c = sim(x, seed=3), sim(x, seed=3), sim(x, seed=4)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert (a - x).abs().flatten(1).mean(1).min() > 0.005  # every image really changes
    assert a.min() >= 0 and a.max() <= 1
    rgb = torch.rand(2, 3, 32, 32)
    out = sim(rgb, seed=0)
    assert out.shape == rgb.shape and not torch.equal(out, sim(rgb, seed=1))
    assert not out.requires_grad


def test_simulation_is_not_the_eot_distribution(batch):
    # real 8-bit JPEG: every output value is a multiple of 1/255, which the float transforms are not
    x, _ = batch
    photo = PrintPhotoSimulation()(x, seed=0)
    assert torch.allclose(photo * 255, (photo * 255).round(), atol=1e-4)


def test_destruction_rate_on_a_hand_made_case():
    # Kurakin et al. 2016: d = sum C(x)(1 - C(adv))C(T(adv)) / sum C(x)(1 - C(adv))
    clean = torch.tensor([1, 1, 1, 1, 0, 1])
    adv = torch.tensor([0, 0, 0, 1, 0, 0])  # image 3 resisted the attack
    transformed = torch.tensor([1, 0, 1, 1, 1, 0])  # image 4 was wrong when clean: it never counts
    assert destruction_rate(clean, adv, transformed) == pytest.approx(2 / 4)
    assert destruction_rate(clean, adv, torch.zeros(6)) == 0.0
    assert destruction_rate(clean, adv, torch.ones(6)) == 1.0
    assert destruction_rate(torch.zeros(3), torch.zeros(3), torch.ones(3)) != destruction_rate(
        torch.zeros(3), torch.zeros(3), torch.ones(3))  # NaN: nothing qualifies
    with pytest.raises(AdvlabError):
        destruction_rate(clean, adv, transformed[:3])


def test_measure_destruction_counts(lenet_mnist, batch):
    model = lenet_mnist[0]
    x, y = batch
    adv = PGD(eps=0.3, steps=5, seed=0)(model, x, y).adv
    identity = measure_destruction(model, x, y, adv, lambda images: images)
    assert identity["destruction_rate"] == 0.0 and identity["qualifying"] > 0
    undo = measure_destruction(model, x, y, adv, lambda images: x)  # a "photo" that restores the clean image
    assert undo["destruction_rate"] == 1.0


def test_patch_changes_only_the_pixels_under_it():
    x = torch.rand(3, 3, 32, 32)
    patch = torch.rand(3, 8, 8)
    placement = {"angle": torch.tensor([0.0, 30.0, -15.0]), "scale": torch.tensor([1.0, 1.2, 0.8]),
                 "center": torch.tensor([[9.5, 11.5], [16.0, 16.0], [20.0, 9.0]])}
    out, mask = place_patch(x, patch, placement)
    changed = (out - x).abs().amax(1, keepdim=True) > 0
    assert not (changed & (mask == 0)).any()
    assert changed.any()
    # axis-aligned, scale 1, corner on the pixel grid: the patch is copied exactly, columns 6..13, rows 8..15
    assert torch.allclose(out[0, :, 8:16, 6:14], patch, atol=1e-5)
    assert mask[0].sum().item() == pytest.approx(64, abs=1e-3)
    assert torch.equal(out[0, :, :8], x[0, :, :8])


def test_placements_keep_the_patch_inside_the_image():
    side = patch_side(0.1, 28, 28)
    assert side == 9
    p = sample_placements(200, 28, 28, side, rotation=20, scale=(0.8, 1.2),
                          generator=torch.Generator().manual_seed(0))
    _, mask = place_patch(torch.zeros(200, 1, 28, 28), torch.ones(1, side, side), p)
    area = mask.flatten(1).sum(1)
    assert torch.allclose(area, (side * p["scale"]) ** 2, rtol=0.12)  # nothing cut off by the border


def test_patch_training_beats_a_random_patch(lenet_mnist, mnist_train, mnist_test):
    model = lenet_mnist[0]
    x, y = mnist_train.tensors(300)
    hx, hy = mnist_test.subset(slice(100, 300))[:]
    trainer = UniversalPatch(target=3, size=0.2, steps=60, lr=0.1, batch_size=32, seed=0,
                             transforms=PrintPhotoTransforms(jpeg=None))
    patch = trainer.fit(model, x, y)
    assert patch.min() >= 0 and patch.max() <= 1 and patch.shape == (1, 13, 13)
    assert trainer.history[-1] < trainer.history[0]
    result = patch_success_rate(model, patch, hx, hy, target=3, draws=2)
    assert result["success_rate"] > result["random_patch_rate"] + 0.2
    assert result["images"] == int((hy != 3).sum())


def test_cli_physical_and_patch(lenet_mnist, tmp_path, capsys):
    out = tmp_path / "phys"
    assert main(["physical", "--model", str(lenet_mnist[2]), "--n", "8", "--steps", "2", "--samples", "2",
                 "--eps", "0.2,51/255", "--random-subset", "--out", str(out), "--no-progress"]) == 0
    rows = json.loads((out / "metrics.json").read_text())["physical"]
    assert {(r["attack"], round(r["eps"], 3)) for r in rows} == {(a, e) for a in ("fgsm", "pgd", "eot")
                                                                 for e in (0.2, 0.2)}
    assert (out / "figures" / "destruction_rates.png").is_file()
    pout = tmp_path / "patch"
    assert main(["patch", "--model", str(lenet_mnist[2]), "--n-train", "32", "--n-test", "16", "--steps", "2",
                 "--sizes", "0.1", "--draws", "1", "--target", "3", "--out", str(pout), "--no-progress"]) == 0
    assert (pout / "figures" / "patch.png").is_file() and (pout / "figures" / "patch_size.png").is_file()
    assert main(["physical", "--model", str(lenet_mnist[2]), "--attack", "laser", "--out",
                 str(tmp_path / "bad")]) == 2
    assert "unknown attack" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
