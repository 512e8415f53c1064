"""The demo's section: white-box attacks (FGSM/PGD, robust accuracy against eps, minimal norms, fooling images)."""

from __future__ import annotations

import torch

from advlab.attacks import FAB, FGSM, PGD, DeepFool, FoolingImages
from advlab.evaluation.robust import minimal_norms, robust_accuracy
from advlab.report.attack_figures import fooling_grid_figure, robust_curve_figure, triptych_figure

DEMO_ORDER = 20


def demo_section(ctx) -> None:
    """FGSM/PGD triptych, robust accuracy vs eps (FGSM, PGD, DeepFool from minimal norms), fooling grid."""
    n_curve, steps = (8, 3) if ctx.quick else (100, 20)
    x, y = ctx.test_data.tensors(n_curve)
    x, y = x.to(ctx.device), y.to(ctx.device)
    model, classes = ctx.model, ctx.test_data.classes
    fgsm = FGSM(eps=0.2)(model, x[:8], y[:8])
    pgd = PGD(eps=0.2, steps=steps, seed=0)(model, x[:8], y[:8])
    picks = (fgsm.success & pgd.success & fgsm.clean_correct).nonzero().squeeze(1)[:2]
    if len(picks) == 0:
        picks = torch.arange(2, device=x.device)
    rows_x = torch.cat([x[:8][picks], x[:8][picks]])
    rows_adv = torch.cat([fgsm.adv[picks], pgd.adv[picks]])
    tri = triptych_figure(model, rows_x, rows_adv, ctx.run.figure_path("attack_triptych.png"), classes,
                          "FGSM (top rows) and PGD (bottom rows), Linf eps 0.2")
    eps = [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]
    ev = robust_accuracy(model, x, y, {"FGSM": lambda e: FGSM(eps=e),
                                       f"PGD-{steps}": lambda e: PGD(eps=e, steps=steps, seed=0, early_stop=True)},
                         eps, batch_size=n_curve, device=ctx.device, progress=False)
    df = minimal_norms(model, x, y, DeepFool(norm="linf", steps=10 if ctx.quick else 50, box_aware=3), norm="linf",
                       batch_size=n_curve, device=ctx.device, progress=False)
    fab = minimal_norms(model, x, y, FAB(norm="linf", steps=3 if ctx.quick else 20), norm="linf",
                        batch_size=n_curve, device=ctx.device, progress=False)
    curves = {k: (eps, v) for k, v in ev.accuracy.items()}
    grid = [e / 100 for e in range(0, 31)]
    curves["DeepFool (minimal Linf)"] = (grid, df.accuracy_at(grid))
    curves["FAB (minimal Linf)"] = (grid, fab.accuracy_at(grid))
    curve = robust_curve_figure(curves, ctx.run.figure_path("attack_curve.png"), "linf",
                                f"robust accuracy vs Linf eps ({n_curve} test images)")
    fool_steps = 1 if ctx.quick else 5
    fool = FoolingImages(eps=0.25, steps=fool_steps)(model, tuple(ctx.test_data.shape),
                                                                ctx.test_data.num_classes, 2 if ctx.quick else 6,
                                                                device=ctx.device)
    grid_fig = fooling_grid_figure(fool.images, fool.target, fool.confidence, fool.predicted,
                                   ctx.run.figure_path("attack_fooling.png"), classes,
                                   title="fooling images: Gaussian noise pushed toward each class (row)")
    acc = dict(zip(eps, ev.accuracy[f"PGD-{steps}"], strict=True))
    ctx.run.add_section(
        "White-box attacks",
        f"FGSM (Goodfellow et al. 2015) and PGD (Madry et al. 2018) on {n_curve} test images: PGD-{steps} robust "
        f"accuracy {acc[0.1]:.2f} at Linf eps 0.1 and {acc[0.3]:.2f} at 0.3 (clean {ev.clean_accuracy:.2f}); "
        f"DeepFool's median minimal Linf perturbation is {df.median:.3f}, FAB's (Croce & Hein 2020b) "
        f"{fab.median:.3f}. Fooling images: {fool.share:.0%} of "
        f"Gaussian-noise images pushed by {fool_steps} signed-gradient step(s) (Linf 0.25 in all) toward a class "
        "are given that class with more than 50% confidence (Goodfellow et al.: 93.4% on CIFAR-10).",
        table={"columns": ["eps", *ev.accuracy.keys()],
               "rows": [[e, *[ev.accuracy[k][i] for k in ev.accuracy]] for i, e in enumerate(eps)]},
        figures=[(tri.name, "clean (label, confidence), perturbation magnified, adversarial"),
                 (curve.name, "robust accuracy against Linf eps, one curve per attack"),
                 (grid_fig.name, "fooling images, one row per target class, titled with the model's answer")],
        key="whitebox")
    ctx.run.metrics["whitebox"] = {"robust_accuracy": ev.to_dict(), "deepfool_linf": df.to_dict(),
                                   "fab_linf": fab.to_dict(),
                                   "fooling": fool.summary()}
