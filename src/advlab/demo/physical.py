"""The demo's section: destruction rates under a print-and-photo simulation, and a universal patch."""

from __future__ import annotations

from advlab.evaluation.physical import DEFAULT_ATTACKS, destruction_table, patch_sweep
from advlab.report.physical import destruction_section, patch_section

DEMO_ORDER = 80


def demo_section(ctx) -> None:
    """Destruction rates of FGSM, PGD and EOT at one eps, and one small patch, on the demo model."""
    n, steps, samples, patch_steps, n_train = (8, 3, 2, 5, 64) if ctx.quick else (32, 8, 4, 40, 300)
    x, y = (t.to(ctx.device) for t in ctx.test_data.head(n)[:])
    rows, _ = destruction_table(ctx.model, x, y, list(DEFAULT_ATTACKS), [0.2], steps, samples, 0, progress=ctx.progress)
    destruction_section(ctx.run, rows, "demo model on MNIST", steps, samples, n)
    tx, ty = (t.to(ctx.device) for t in ctx.train_data.head(n_train)[:])
    hx, hy = (t.to(ctx.device) for t in ctx.test_data.subset(slice(n, n + (16 if ctx.quick else 100)))[:])
    prow, patches = patch_sweep(ctx.model, tx, ty, hx, hy, 3, [0.25], patch_steps, 2, 0, ctx.progress, lr=0.1)
    patch_section(ctx.run, ctx.model, prow, patches, hx, hy, 3, ctx.test_data.classes[3], "demo model on MNIST",
                  patch_steps)
    ctx.run.metrics["physical"] = {"destruction": rows, "patch": prow}
