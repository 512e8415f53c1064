"""The demo's section: latent and output attacks on a small MNIST autoencoder."""

from __future__ import annotations

from advlab.evaluation.autoencoder import autoencoder_sweep
from advlab.report.autoencoder import autoencoder_section
from advlab.training.autoencoder import autoencoder_config, train_autoencoder
from advlab.training.cache import cached_checkpoint_path

DEMO_ORDER = 70


def demo_section(ctx) -> None:
    """Latent and output attacks on a small MNIST autoencoder; the demo model reads the results."""
    full = autoencoder_config("mnist")
    if cached_checkpoint_path(full, ctx.train_data, ctx.test_data).is_file():
        config = full
    elif ctx.quick:
        config = autoencoder_config("mnist", epochs=1, train_subset=2000, schedule="constant")
    else:
        config = autoencoder_config("mnist", epochs=2, train_subset=12000, schedule="constant")
    autoencoder, meta, _, _ = train_autoencoder(config, ctx.device, ctx.data_dir, progress=ctx.progress,
                                                train_data=ctx.train_data, test_data=ctx.test_data)
    n, steps, budgets = (4, 10, [0.1, 0.3]) if ctx.quick else (32, 60, [0.05, 0.1, 0.2, 0.3])
    x, y = (t.to(ctx.device) for t in ctx.test_data.head(n)[:])
    pool_x, pool_y = (t.to(ctx.device) for t in ctx.test_data.subset(slice(n, n + 200))[:])
    label = f"conv_autoencoder on MNIST ({config.epochs} epochs, test MSE {meta['test_mse']:.4f})"
    sweep = autoencoder_sweep(autoencoder, ctx.model, x, y, pool_x, pool_y, ["latent", "output"], "linf", budgets,
                              steps, 0)
    autoencoder_section(ctx.run, sweep, label)
    ctx.run.metrics["autoencoder"] = sweep.metrics
