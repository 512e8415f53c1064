"""The 3D adversarial object (renderer, texture EOT) and the adversarial T-shirt (TPS, patch)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from advlab.attacks.physical.eot3d import TextureEOT, compare_textures, texture_from_image, viewpoint_success
from advlab.attacks.physical.render import Renderer, ViewDistribution, fixed_view
from advlab.attacks.physical.transforms import PrintPhotoTransforms
from advlab.attacks.physical.tshirt import (
    AdversarialTShirt,
    ClothDeformation,
    tps_warp,
    tshirt_success_rate,
)
from advlab.cli.main import main
from advlab.errors import AdvlabError


def ambient_only(renderer: Renderer, n: int, seed: int = 0) -> dict:
    views = renderer.sample(n, torch.Generator().manual_seed(seed))
    views["ambient"] = torch.ones(n)
    views["directional"] = torch.zeros(n)
    views["noise"] = torch.zeros(n)
    return views


def test_renderer_gradient_matches_finite_differences():
    torch.manual_seed(0)
    backgrounds = torch.rand(2, 3, 6, 6, dtype=torch.float64)
    renderer = Renderer(backgrounds, size=6, supersample=2, shape="shell")
    views = renderer.sample(2, torch.Generator().manual_seed(3))
    views["noise"] = torch.zeros(2)
    # Colours well inside (0, 1) after shading, so the final clamp is inactive.
    texture = (0.2 + 0.4 * torch.rand(3, 4, 6, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: renderer(t, views), (texture,), eps=1e-6, atol=1e-7, fast_mode=True)
    # and the gradient is not trivially zero: the object covers pixels
    renderer(texture, views).sum().backward()
    assert texture.grad.abs().sum() > 0


def test_one_colour_texture_renders_that_colour_under_ambient_light():
    background = torch.zeros(1, 3, 16, 16)
    renderer = Renderer(background, size=16, supersample=2)
    colour = torch.tensor([0.9, 0.3, 0.6])
    texture = colour.view(3, 1, 1).expand(3, 8, 16).contiguous()
    views = ambient_only(renderer, 6)
    images, mask = renderer(texture, views, with_mask=True)
    inside = mask[:, 0] == 1
    assert inside.sum() > 6 * 20  # the object covers many whole pixels
    pixels = images.permute(0, 2, 3, 1)[inside]
    assert torch.allclose(pixels, colour.expand_as(pixels), atol=1e-6)
    assert torch.equal(images.permute(0, 2, 3, 1)[mask[:, 0] == 0], torch.zeros(int((mask == 0).sum()), 3))


def test_a_full_turn_about_any_axis_renders_the_same_image():
    torch.manual_seed(1)
    backgrounds = torch.rand(3, 3, 12, 12, dtype=torch.float64)
    renderer = Renderer(backgrounds, size=12, supersample=2)
    texture = torch.rand(3, 8, 16, dtype=torch.float64)
    views = renderer.sample(4, torch.Generator().manual_seed(2))
    base = renderer(texture, views)
    for axis in range(3):
        turned = {k: v.clone() for k, v in views.items()}
        turned["angles"][:, axis] += 360.0
        assert torch.allclose(renderer(texture, turned), base, atol=1e-9)
    turned = {k: v.clone() for k, v in views.items()}
    turned["angles"][:, 1] += 90.0
    assert (renderer(texture, turned) - base).abs().max() > 0.05  # a quarter turn does change the image


def test_views_are_random_reproducible_and_texture_outside_the_box_is_refused():
    renderer = Renderer(torch.rand(4, 1, 8, 8), size=8)
    a = renderer.sample(5, torch.Generator().manual_seed(0))
    b = renderer.sample(5, torch.Generator().manual_seed(0))
    texture = torch.rand(1, 4, 8)
    assert torch.equal(renderer(texture, a), renderer(texture, b))
    assert (a["angles"].std(0) > 10).all()  # every axis turns
    with pytest.raises(AdvlabError, match="texture"):
        TextureEOT(target=1, steps=1).fit(nn.Sequential(nn.Flatten(), nn.Linear(64, 2)), renderer, texture + 1)
    with pytest.raises(AdvlabError, match="distance"):
        ViewDistribution(distance=(0.5, 1.0))
    with pytest.raises(AdvlabError, match="distance"):
        ViewDistribution(distance=(3.0, 2.0))
    with pytest.raises(AdvlabError, match="rotation"):
        ViewDistribution(rotation=(190.0, 0.0, 0.0))


class CentreColour(nn.Module):
    """A closed-form classifier: class 1 when the centre of the image is redder than green, else 0."""

    def forward(self, x):
        centre = x[:, :, 4:12, 4:12].mean((2, 3))
        score = 20 * (centre[:, 0] - centre[:, 1])
        return torch.stack([-score, score], 1)


def test_eot_texture_wins_on_held_out_views_where_one_view_does_not():
    torch.manual_seed(0)
    grey = torch.full((8, 3, 16, 16), 0.5)
    train_renderer = Renderer(grey[:4] * torch.rand(4, 1, 1, 1), size=16, supersample=1)
    test_renderer = Renderer(grey[4:] * torch.rand(4, 1, 1, 1), size=16, supersample=1)
    green = torch.tensor([0.2, 0.7, 0.2]).view(3, 1, 1).expand(3, 8, 16).contiguous()
    model = CentreColour()
    result = compare_textures(model, train_renderer, test_renderer, green, target=1, true_class=0, eps=0.6,
                              steps=25, samples=6, lr=0.15, views=120, angles=[0, 180], per_angle=4)
    rates = {r["texture"]: r for r in result["rows"]}
    assert rates["original"]["target_rate"] == 0.0 and rates["original"]["true_rate"] == 1.0
    assert rates["single view"]["fixed_view_prediction"] == 1  # it works where it was made
    assert rates["EOT"]["target_rate"] >= 0.9
    assert rates["EOT"]["target_rate"] >= rates["single view"]["target_rate"] + 0.2
    for r in result["rows"]:
        assert r["linf_change"] <= 0.6 + 1e-6
    again = viewpoint_success(model, test_renderer, result["textures"]["EOT"], 1, 0, views=120, seed=1000)
    assert again["target_rate"] == rates["EOT"]["target_rate"]  # measured on reproducible held-out draws


def test_texture_from_image_repeats_the_picture_around_the_object():
    image = torch.rand(3, 32, 32)
    texture = texture_from_image(image, 16, 32)
    assert texture.shape == (3, 16, 32)
    assert torch.equal(texture[..., :16], texture[..., 16:])


def test_tps_with_undisplaced_control_points_is_the_identity():
    x = torch.rand(3, 3, 13, 13)
    deformation = ClothDeformation(strength=0.1, grid=4)
    points = deformation.control_points()
    assert torch.allclose(tps_warp(x, points, torch.zeros(3, 16, 2)), x, atol=1e-5)
    rigid = ClothDeformation(strength=0.0, printer=False, colour=0.0)
    assert torch.allclose(rigid(x[0], 2, torch.Generator().manual_seed(0)), x[0].expand(2, -1, -1, -1), atol=1e-6)
    bent = deformation(x[0], 2, torch.Generator().manual_seed(0))
    assert bent.shape == (2, 3, 13, 13) and bent.min() >= 0 and bent.max() <= 1
    assert (bent[0] - bent[1]).abs().max() > 0.05  # each copy folds its own way


def test_tps_moves_a_control_point_where_it_is_displaced():
    points = ClothDeformation(grid=5).control_points()
    yy, xx = torch.meshgrid(torch.arange(41.0), torch.arange(41.0), indexing="ij")
    blob = torch.exp(-((xx - 20) ** 2 + (yy - 20) ** 2) / 8)[None, None]
    shift = torch.zeros(1, 25, 2)
    shift[0, 12, 0] = 0.4  # the centre point, 0.4 of the half-side = 8.2 pixels to the right
    moved = tps_warp(blob, points, shift)[0, 0].sum(0)
    centroid = (moved * torch.arange(41.0)).sum() / moved.sum()
    assert 26 < centroid < 30


def test_deformation_strength_is_checked():
    with pytest.raises(AdvlabError, match="strength"):
        ClothDeformation(strength=0.4)
    with pytest.raises(AdvlabError, match="strength"):
        ClothDeformation(strength=-0.01)
    with pytest.raises(AdvlabError, match="grid"):
        ClothDeformation(grid=1)
    with pytest.raises(AdvlabError, match="differ"):
        AdversarialTShirt(source=1, target=1)


def test_tshirt_patch_evades_on_held_out_images():
    # The closed-form centre-colour classifier: green images are class 0, and only a patch that
    # turns the centre red (through the printer map, folds and placement jitter) makes them class 1.
    g = torch.Generator().manual_seed(0)
    green = torch.tensor([0.2, 0.7, 0.2]).view(1, 3, 1, 1)
    images = (green + 0.1 * torch.rand(300, 3, 16, 16, generator=g)).clamp(0, 1)
    labels = torch.zeros(300, dtype=torch.long)
    model = CentreColour()
    wearer = AdversarialTShirt(source=0, size=0.2, steps=30, lr=0.1, batch_size=16,
                               deformation=ClothDeformation(0.08), transforms=PrintPhotoTransforms(jpeg=None))
    patch = wearer.fit(model, images[:200], labels[:200])
    assert patch.shape == (3, 7, 7) and patch.min() >= 0 and patch.max() <= 1
    measured = tshirt_success_rate(model, patch, images[200:], labels[200:], wearer, ClothDeformation(0.12),
                                   draws=2, transforms=PrintPhotoTransforms(jpeg=None), seed=7)
    assert measured["images"] == 100
    assert measured["success_rate"] >= 0.9
    assert measured["random_patch_rate"] <= 0.1


def test_cli_physical3d_and_tshirt(lenet_mnist, tmp_path, capsys):
    ckpt = str(lenet_mnist[2])
    out = tmp_path / "obj"
    assert main(["physical3d", "--model", ckpt, "--dataset", "mnist", "--object-class", "0", "--target", "3",
                 "--steps", "2", "--samples", "2", "--views", "8", "--per-angle", "2", "--backgrounds", "8",
                 "--out", str(out), "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())["physical3d"]
    assert [r["texture"] for r in metrics["rows"]] == ["original", "single view", "EOT"]
    for name in ("object_views.png", "object_rotation.png", "object_textures.png"):
        assert (out / "figures" / name).is_file()
    assert "3D adversarial object" in (out / "report.html").read_text()
    tout = tmp_path / "shirt"
    assert main(["tshirt", "--model", ckpt, "--dataset", "mnist", "--wearer", "1", "--steps", "2", "--n-train",
                 "200", "--n-test", "200", "--draws", "1", "--strengths", "0,0.1", "--out", str(tout),
                 "--no-progress"]) == 0
    rows = json.loads((tout / "metrics.json").read_text())["tshirt"]["rows"]
    assert [r["patch"] for r in rows] == ["trained with TPS", "trained rigid only"]
    assert {"undeformed", "deformed", "deformed_photo"} <= set(rows[0])
    for name in ("tshirt_patch.png", "tshirt_placements.png", "tshirt_strength.png"):
        assert (tout / "figures" / name).is_file()
    capsys.readouterr()


@pytest.mark.parametrize("argv, message", [
    (["physical3d", "--distance", "0.5,1"], "distance"),
    (["physical3d", "--rotation", "200,0,0"], "rotation"),
    (["tshirt", "--train-strength", "0.5"], "strength"),
    (["tshirt", "--strengths", "0,0.3"], "strength"),
])
def test_bad_ranges_exit_2_with_one_line(argv, message, tmp_path, capsys):
    out = tmp_path / "bad"
    assert main([*argv, "--dataset", "mnist", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_texture_file_outside_the_box_exits_2(tmp_path, capsys):
    path = tmp_path / "texture.npy"
    np.save(path, np.full((8, 16, 1), 1.5, dtype=np.float32))
    assert main(["physical3d", "--dataset", "mnist", "--texture", str(path), "--target", "3", "--object-class", "0",
                 "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "[0, 1]" in err and err.count("\n") == 1
    assert not (tmp_path / "bad").exists()


def test_fixed_view_is_upright_and_centred():
    renderer = Renderer(torch.zeros(1, 3, 16, 16), size=16)
    _, mask = renderer(torch.ones(3, 4, 8), fixed_view(renderer, 1), with_mask=True)
    rows, cols = mask[0, 0].sum(1), mask[0, 0].sum(0)
    centre = lambda w: float((w * torch.arange(16.0)).sum() / w.sum())  # noqa: E731
    assert abs(centre(rows) - 7.5) < 0.5 and abs(centre(cols) - 7.5) < 0.5


def test_demo_section_adds_the_object_and_the_tshirt(lenet_mnist, tmp_path, mnist_train, mnist_test):
    from advlab.demo import DemoContext
    from advlab.demo.physical3d import DEMO_ORDER, demo_section
    from advlab.report.run import RunDir

    assert DEMO_ORDER == 81
    with RunDir(tmp_path / "demo", "demo", {}) as run_dir:
        ctx = DemoContext(run_dir, lenet_mnist[0], lenet_mnist[1], mnist_train, mnist_test, torch.device("cpu"),
                          quick=True, progress=False)
        demo_section(ctx)
        out = run_dir.commit()
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["physical3d"]["rows"]) == 3 and len(metrics["tshirt"]["rows"]) == 2
    assert (out / "figures" / "object_views.png").is_file() and (out / "figures" / "tshirt_strength.png").is_file()
