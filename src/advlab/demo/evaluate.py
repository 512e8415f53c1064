"""The demo's section: defenses evaluated honestly (standard, fast adversarial training, distillation)."""

from __future__ import annotations

from advlab.defenses.adversarial import adversarial_loss, fast_recipe
from advlab.defenses.distillation import distill_recipe, distillation_loss
from advlab.evaluation.defense import evaluate_defense
from advlab.report.evaluation_sections import add_comparison
from advlab.training import default_config, train_model

DEMO_ORDER = 45


def demo_section(ctx) -> None:
    """A small-budget version of the defenses table: the demo's standard model, a fast-adversarially
    trained and a distilled model, evaluated with the diagnostics (docs/defenses.md has the full one)."""
    quick = ctx.quick
    budget = ({"model": "lenet", "epochs": 1, "train_subset": 2000, "lr": 3e-3} if quick else
              {"model": "mnist_cnn", "epochs": 2, "train_subset": 20000, "lr": 5e-3, "batch_size": 100})
    data = {"train_data": ctx.train_data, "test_data": ctx.test_data}
    fast_config = default_config("mnist", **budget, recipe=fast_recipe(0.3))
    fast, fast_meta, _, _ = train_model(fast_config, ctx.device, ctx.data_dir, adversarial_loss(fast_config.recipe),
                                        progress=ctx.progress, **data)
    distill_config = default_config("mnist", **{**budget, "lr": 1e-3}, recipe=distill_recipe(100.0))
    loss = distillation_loss(distill_config, ctx.device, ctx.data_dir, progress=ctx.progress, **data)
    distilled, distill_meta, _, _ = train_model(distill_config, ctx.device, ctx.data_dir, loss, progress=ctx.progress,
                                                **data)
    n, steps, restarts = (20, 5, 1) if quick else (200, 20, 2)
    x, y = ctx.test_data.tensors(n)
    eps = [0.1, 0.2, 0.3]
    results = {}
    for label, model in [("standard", ctx.model), ("fast adversarial training", fast),
                         ("defensive distillation T=100", distilled)]:
        ev = evaluate_defense(model, x, y, eps, steps, restarts, blackbox_n=min(n, 50),
                              blackbox_queries=50 if quick else 300, unbounded_n=min(n, 50), device=ctx.device,
                              progress=False)
        results[label] = {"label": label, **ev.to_dict()}
    text = (f"mnist_cnn as trained above, a {budget['model']} trained with fast adversarial training (Wong et al. "
            f"2020, eps 0.3, {budget['epochs']} epoch(s) on {budget['train_subset']} images) and one with defensive "
            f"distillation (Papernot et al. 2016, T = 100), on {n} test images: worst case over FGSM, "
            f"PGD-{steps}x{restarts} on the cross-entropy and on the C&W logit margin. "
            + " ".join(f"{r['label']}: " + ("; ".join(d["message"] for d in r["diagnostics"] if d["fired"])
                                             or "no gradient-masking check fired.") for r in results.values())
            + " The full budget (PGD-40 x 10 restarts, 1,000 images) is in docs/defenses.md.")
    add_comparison(ctx.run, results, "Defenses, evaluated honestly", text, key="defenses", first=False)
    ctx.run.metrics["defenses"] = {"evaluations": results, "fast_train_config": fast_config.to_dict(),
                                   "distill_train_config": distill_config.to_dict(),
                                   "fast_test_accuracy": fast_meta["test_accuracy"],
                                   "distill_test_accuracy": distill_meta["test_accuracy"]}
