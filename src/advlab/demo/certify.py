"""The demo's section: randomized smoothing of a noise-trained LeNet."""

from __future__ import annotations

from advlab.defenses.noise import noise_config, train_noise_model
from advlab.defenses.smoothing import Smooth
from advlab.evaluation.certified import certify_dataset
from advlab.report.sections import add_certify_section

DEMO_ORDER = 50


def demo_section(ctx) -> None:
    """A noise-trained LeNet on the embedded MNIST, certified on a few dozen images at small n."""
    sigma = 0.25
    quick = ctx.quick
    config = noise_config("mnist", sigma, model="lenet", epochs=1 if quick else 2, lr=3e-3,
                          train_subset=3000 if quick else 20000)
    model, meta, path, cached = train_noise_model(config, ctx.device, ctx.data_dir, progress=ctx.progress,
                                                  train_data=ctx.train_data, test_data=ctx.test_data)
    n_images, n0, n = (10, 20, 200) if quick else (40, 100, 2000)
    smooth = Smooth(model, ctx.test_data.num_classes, sigma)
    result = certify_dataset(smooth, ctx.test_data.head(n_images), n0, n, 0.001, batch_size=1000, seed=0,
                             device=ctx.device, progress=ctx.progress)
    add_certify_section(ctx.run, [(f"lenet sigma={sigma:g}", result)], "mnist", meta, key="certify",
                        title="Certified robustness (randomized smoothing)")
    ctx.run.metrics["certify"] = {**result.summary(), "checkpoint": str(path), "cached": cached,
                                  "train_config": config.to_dict()}
