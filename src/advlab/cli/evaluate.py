"""advlab evaluate: an honest robustness evaluation of one or more checkpoints.

    advlab evaluate CHECKPOINT [CHECKPOINT ...] --dataset mnist --eps 0.1,0.2,0.3 [--n 1000]
                    [--steps 40] [--restarts 10] [--json OUT]

Clean accuracy and robust accuracy at each eps under FGSM, PGD on the cross-entropy with restarts,
PGD on the C&W logit margin with restarts and the per-sample worst case of the three, plus the
gradient-masking diagnostics (advlab.evaluation.defense), as a table, JSON and plots. With several
checkpoints, a comparison table comes first.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from advlab.cli.common import (
    add_data_args,
    add_device_arg,
    add_out_arg,
    add_progress_arg,
    add_speed_args,
    check_model_fits,
    dataset_split,
    device_from,
    float_list,
    positive_int,
    resolve_model,
    speed_up,
)
from advlab.errors import AdvlabError
from advlab.evaluation.defense import DefenseEvaluation, evaluate_defense, summary_rows
from advlab.report.attack_figures import robust_curve_figure
from advlab.report.run import RunDir
from advlab.runtime import atomic_write, autocast, gradient_batch_size

DEMO_ORDER = 45


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="robust accuracy under FGSM, PGD, C&W and their worst case, with "
                       "gradient-masking diagnostics",
                       description="Evaluate checkpoints honestly: clean accuracy; robust accuracy at each eps (L-inf) "
                       "under FGSM, PGD on the cross-entropy and PGD on the C&W logit margin (both with restarts), "
                       "and the per-sample worst case; and diagnostics that fire when a defense only hides "
                       "gradients (single-step beating iterative, accuracy rising with eps, an unbounded attack "
                       "not reaching 0%%, zero input gradients, black-box beating white-box).")
    p.add_argument("models", nargs="+", metavar="CHECKPOINT",
                   help="one or more .safetensors checkpoints (or architecture names: their default recipe)")
    add_data_args(p)
    p.add_argument("--eps", type=float_list, default=[0.1, 0.2, 0.3], help="comma-separated L-inf radii "
                   "(default 0.1,0.2,0.3)")
    p.add_argument("--n", type=positive_int, default=1000, help="the first N test images (default 1000)")
    p.add_argument("--steps", type=positive_int, default=40, help="PGD steps (default 40)")
    p.add_argument("--restarts", type=positive_int, default=10, help="PGD random restarts (default 10)")
    p.add_argument("--step-size", type=float, default=None, help="PGD step (default 2.5 * eps / steps)")
    p.add_argument("--blackbox-n", type=int, default=100,
                   help="images for the black-box check, Square Attack at the largest eps (0: skip; default 100)")
    p.add_argument("--blackbox-queries", type=positive_int, default=1000, help="Square Attack queries per image")
    p.add_argument("--unbounded-n", type=int, default=200,
                   help="images for the unbounded-attack check (0: skip; default 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="images per batch (default: 500 on a CPU; on a GPU the largest that fits)")
    p.add_argument("--json", default=None, help="also write the metrics as JSON to this file")
    add_device_arg(p)
    add_speed_args(p)
    add_out_arg(p)
    add_progress_arg(p)
    p.set_defaults(func=run)


def describe(meta: dict) -> str:
    """A short name for a checkpoint from the recipe it records."""
    recipe = meta.get("recipe") or {"method": "standard"}
    settings = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in recipe.items()
                         if k != "method")
    return f"{recipe.get('method', '?')}" + (f" ({settings})" if settings else "")


def check_args(args: argparse.Namespace) -> None:
    if any(e > 1 for e in args.eps):
        raise AdvlabError(f"--eps are L-inf radii on the [0, 1] pixel scale, at most 1; got {args.eps}")
    if args.blackbox_n < 0 or args.unbounded_n < 0:
        raise AdvlabError("--blackbox-n and --unbounded-n must be 0 (skip) or positive")
    if args.step_size is not None and not 0 < args.step_size <= 1:
        raise AdvlabError(f"--step-size must be in (0, 1], got {args.step_size}")


def add_model_section(run_dir: RunDir, key: str, label: str, ev: DefenseEvaluation) -> None:
    r = ev.robust
    rows = {name: r.accuracy[k] for k, name in ev.attacks.items()} | {"worst case": r.worst_case()}
    clean_point = r.eps[0] > 0  # start every curve at eps 0 (clean accuracy) unless the list has it
    eps = [0.0, *r.eps] if clean_point else r.eps
    curves = {name: (eps, [r.clean_accuracy, *acc] if clean_point else acc) for name, acc in rows.items()}
    fig = robust_curve_figure(curves, run_dir.figure_path(f"evaluate_{key}.png"), "linf",
                              f"{label}: robust accuracy ({r.n} test images)")
    fired = [d for d in ev.diagnostics if d.fired]
    verdict = (f"Gradient masking suspected ({len(fired)} of {len(ev.diagnostics)} checks fired): "
               + " ".join(f"[{d.name}] {d.message}" for d in fired)) if fired else \
        "No sign of gradient masking: " + " ".join(d.message for d in ev.diagnostics)
    run_dir.add_section(f"Robustness of {label}",
                        f"Clean accuracy {r.clean_accuracy:.4f} on {r.n} test images. {verdict}",
                        table={"columns": ["eps", *ev.attacks.values(), "worst case"], "rows": summary_rows(ev)},
                        figures=[(fig.name, "robust accuracy against L-inf eps, one curve per attack, and the "
                                  "per-sample worst case")], key=f"evaluate_{key}")


def run(args: argparse.Namespace) -> int:
    check_args(args)
    device = device_from(args)
    data = dataset_split(args, "test", args.n)
    loaded = []
    for spec in args.models:
        model, meta = resolve_model(spec, args, device)
        check_model_fits(meta, data, spec)
        loaded.append((spec, speed_up(model, args), meta))
    x, y = data.tensors()
    if args.batch_size is None:
        args.batch_size = min(gradient_batch_size(model, data.shape, device, cpu_default=500) for _, model, _ in loaded)
    config = {"models": args.models, "dataset": args.dataset, "n": len(data), "eps": args.eps, "steps": args.steps,
              "restarts": args.restarts, "step_size": args.step_size, "seed": args.seed, "precision": args.precision}
    results = {}
    with RunDir(args.out, "evaluate", config) as run_dir:
        for i, (spec, model, meta) in enumerate(loaded):
            label = describe(meta)
            start, cpu = time.perf_counter(), time.process_time()
            with autocast(device, args.precision):
                ev = evaluate_defense(model, x, y, args.eps, args.steps, args.restarts, args.step_size,
                                      args.blackbox_n, args.blackbox_queries, args.unbounded_n, args.seed,
                                      args.batch_size, device, args.progress)
            results[spec] = {"label": label, **ev.to_dict(), "wall_seconds": time.perf_counter() - start,
                             "cpu_seconds": time.process_time() - cpu, "device": str(device),
                             "threads": torch.get_num_threads()}
            add_model_section(run_dir, str(i), label, ev)
            print_table(label, ev)
        if len(loaded) > 1:
            add_comparison(run_dir, results)
        run_dir.metrics["evaluations"] = results
        if args.json:
            atomic_write(args.json, lambda p: p.write_text(json.dumps({"config": config, "evaluations": results},
                                                                       indent=2) + "\n"))
        out = run_dir.commit()
    print(f"report: {out / 'report.html'}")
    return 0


COMPARISON_TEXT = ("Clean accuracy and worst-case robust accuracy (FGSM, PGD on the cross-entropy and on the C&W "
                   "margin, per sample) of each model at each eps, and whether any gradient-masking check fired.")


def add_comparison(run_dir: RunDir, results: dict, title: str = "Comparison", text: str = COMPARISON_TEXT,
                   key: str = "evaluate_comparison", first: bool = True) -> None:
    """The comparison table and figure of several evaluations, as the report's first section (or last)."""
    eps = next(iter(results.values()))["eps"]
    rows = [[r["label"], r["clean_accuracy"], *r["worst_case"], "yes" if r["masking_suspected"] else "no"]
            for r in results.values()]
    curves = {r["label"]: ([0.0, *eps], [r["clean_accuracy"], *r["worst_case"]]) for r in results.values()}
    fig = robust_curve_figure(curves, run_dir.figure_path(f"{key}.png"), "linf", "worst-case robust accuracy per model")
    section = {"title": title, "key": key, "text": text,
               "table": {"columns": ["model", "clean", *[f"eps {e:g}" for e in eps], "masking suspected"],
                         "rows": rows},
               "figures": [{"file": fig.name, "caption": "worst-case robust accuracy against L-inf eps"}]}
    run_dir.sections.insert(0 if first else len(run_dir.sections), section)


def print_table(label: str, ev: DefenseEvaluation) -> None:
    r = ev.robust
    names = list(ev.attacks.values()) + ["worst case"]
    print(f"{label}: clean accuracy {r.clean_accuracy:.4f} on {r.n} images")
    print("  eps    " + "  ".join(f"{n[:28]:>28}" for n in names))
    for row in summary_rows(ev):
        print(f"  {row[0]:<6g} " + "  ".join(f"{v:>28.4f}" for v in row[1:]))
    for d in ev.diagnostics:
        print(f"  [{'FIRED' if d.fired else 'ok'}] {d.name}: {d.message}")


def demo_section(ctx) -> None:
    """A small-budget version of the defenses table: the demo's standard model, a fast-adversarially
    trained and a distilled model, evaluated with the diagnostics (docs/defenses.md has the full one)."""
    from advlab.defenses.adversarial import adversarial_loss, fast_recipe
    from advlab.defenses.distillation import distill_recipe, distillation_loss
    from advlab.training import default_config, train_model

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
