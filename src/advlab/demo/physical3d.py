"""The demo's section: a 3D object and an adversarial T-shirt on the demo model."""

from __future__ import annotations

from advlab.attacks.physical.eot3d import compare_textures, texture_from_image
from advlab.attacks.physical.tshirt import compare_tshirts
from advlab.evaluation.physical import make_renderers
from advlab.report.physical import object_section, tshirt_section

DEMO_ORDER = 81


def demo_section(ctx) -> None:
    """A 3D object and a T-shirt on the demo's MNIST model, in seconds: a tiny texture, few steps."""
    quick = ctx.quick
    classes = ctx.test_data.classes
    train_bg = ctx.train_data.head(16 if quick else 64)[:][0].to(ctx.device)
    test_bg = ctx.test_data.subset(slice(1000, 1016 if quick else 1064))[:][0].to(ctx.device)
    config = {"rotation": (180.0, 180.0, 180.0), "distance": (2.2, 3.0), "translation": 0.08, "noise": 0.02,
              "supersample": 2, "shape": "shell"}
    size = ctx.test_data.shape[-1]
    train_renderer, test_renderer = make_renderers(config, train_bg, test_bg, size)
    true_class, target = 0, 3
    source = ctx.train_data.subset((ctx.train_data.labels == true_class).nonzero().flatten()[:1])[:][0][0]
    texture = texture_from_image(source, 16, 32).to(ctx.device)
    steps, samples, views, per_angle, turn = (4, 4, 24, 2, 90) if quick else (40, 8, 200, 8, 45)
    eps = 0.3
    result = compare_textures(ctx.model, train_renderer, test_renderer, texture, target, true_class, eps, steps,
                              samples, None, views, angles=list(range(0, 361, turn)), per_angle=per_angle,
                              progress=ctx.progress)
    object_section(ctx.run, ctx.model, result, test_renderer, target, true_class, classes, "demo model on MNIST",
                   eps, steps, samples, views, per_angle)
    tx, ty = (t.to(ctx.device) for t in ctx.train_data.head(600 if quick else 3000)[:])
    hx, hy = (t.to(ctx.device) for t in ctx.test_data.subset(slice(2000, 2200 if quick else 3000))[:])
    patch_steps = 4 if quick else 60
    tshirt = compare_tshirts(ctx.model, tx, ty, hx, hy, source=1, size=0.2, steps=patch_steps, lr=0.1,
                             strengths=[0.0, 0.15] if quick else [0.0, 0.05, 0.1, 0.15], draws=1 if quick else 2,
                             progress=ctx.progress)
    tshirt_section(ctx.run, ctx.model, tshirt, hx, hy, classes, "demo model on MNIST",
                   {"size": 0.2, "train_strength": 0.08, "test_strength": 0.08, "grid": 4, "steps": patch_steps})
    ctx.run.metrics["physical3d"] = {"rows": result["rows"], "curves": result["curves"]}
    ctx.run.metrics["tshirt"] = {"rows": tshirt["rows"], "curves": tshirt["curves"]}
