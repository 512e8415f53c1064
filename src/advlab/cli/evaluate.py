"""advlab evaluate: an honest robustness evaluation of one or more checkpoints.

    advlab evaluate CHECKPOINT [CHECKPOINT ...] --dataset mnist --eps 0.1,0.2,0.3 [--n 1000]
                    [--suite classic|standard|rand] [--norm linf|l2] [--steps 40] [--restarts 10] [--json OUT]
    advlab evaluate --compare RUN_A RUN_B

Clean accuracy and robust accuracy at each eps, plus the gradient-masking diagnostics, as a table,
JSON and plots. --suite classic (the default): FGSM, PGD on the cross-entropy and on the C&W logit
margin with restarts, and their per-sample worst case (advlab.evaluation.defense). --suite standard:
the ensemble of Croce & Hein 2020 (APGD-CE, APGD-T, FAB-T, Square) and --suite rand its EOT version for
randomized models (advlab.evaluation.suite); they save one record per sample (samples_K.json: which
attack broke it, at which step, at what cost, the adversarial norm), which --compare reads to list the
samples one run broke and the other did not. With several checkpoints, a comparison table comes first.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from advlab.cli.common import (
    add_data_args,
    add_device_arg,
    add_out_arg,
    add_progress_arg,
    add_speed_args,
    check_model_fits,
    dataset_split,
    declare_output_file,
    device_from,
    float_list,
    nonnegative_int,
    positive_float,
    positive_int,
    resolve_model,
    seed_int,
    speed_up,
)
from advlab.errors import AdvlabError
from advlab.evaluation.defense import DefenseEvaluation, evaluate_defense, summary_rows
from advlab.evaluation.records import RecordStore, data_sha256, model_hash, model_summary, recorded
from advlab.evaluation.suite import (
    FAB_MODES,
    SCHEDULES,
    SUITES,
    SuiteConfig,
    SuiteEvaluation,
    check_classifier,
    compare_runs,
    run_suite,
)
from advlab.report.attack_figures import robust_curve_figure
from advlab.report.run import RunDir, load_run
from advlab.runtime import atomic_write, autocast, gradient_batch_size

DEMO_ORDER = 45


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="robust accuracy under FGSM, PGD, C&W (classic) or APGD, FAB, Square (--suite "
                       "standard), worst case per sample, with "
                       "gradient-masking diagnostics",
                       description="Evaluate checkpoints honestly: clean accuracy; robust accuracy at each eps (L-inf) "
                       "under FGSM, PGD on the cross-entropy and PGD on the C&W logit margin (both with restarts), "
                       "and the per-sample worst case; and diagnostics that fire when a defense only hides "
                       "gradients (single-step beating iterative, accuracy rising with eps, an unbounded attack "
                       "not reaching 0%%, zero input gradients, black-box beating white-box).")
    p.add_argument("models", nargs="*", metavar="CHECKPOINT",
                   help="one or more .safetensors checkpoints (or architecture names: their default recipe)")
    add_data_args(p)
    p.add_argument("--suite", default="classic", choices=SUITES,
                   help="classic: FGSM and PGD (CE, C&W margin) with restarts; standard: APGD-CE, APGD-T, FAB-T, "
                   "Square (Croce & Hein 2020); rand: APGD-CE and APGD-DLR with EOT, for randomized models "
                   "(default: classic)")
    p.add_argument("--norm", default="linf", choices=("linf", "l2"), help="threat model of the standard and rand "
                   "suites (default linf; classic is L-inf only)")
    p.add_argument("--eps", type=float_list, default=None, help="comma-separated radii (default 0.1,0.2,0.3 for "
                   "L-inf; 0.5 on CIFAR-10 and 2.0 on MNIST for L2)")
    p.add_argument("--schedule", default="fast", choices=SCHEDULES,
                   help="standard suite's budget: fast (default: APGD-T toward the 3 most likely wrong classes, no "
                   "FAB-T) or autoattack (the authors': 9 targets, FAB-T on every remaining sample)")
    p.add_argument("--targets", type=positive_int, default=None,
                   help="target classes of APGD-T and FAB-T (default: the schedule's, 3 or 9)")
    p.add_argument("--fab", default=None, choices=FAB_MODES,
                   help="where FAB-T runs: off, unconverged (where APGD-T had not converged: its last checkpoint "
                   "did not halve the step) or all (default: the schedule's)")
    p.add_argument("--iterations", type=positive_int, default=100, help="APGD and FAB iterations (default 100)")
    p.add_argument("--square-queries", type=positive_int, default=5000, help="Square queries per image in the "
                   "standard suite (default 5000)")
    p.add_argument("--eot", type=positive_int, default=20, help="gradient draws per step in the rand suite "
                   "(default 20)")
    p.add_argument("--compare", nargs=2, metavar=("RUN_A", "RUN_B"), default=None,
                   help="list the samples one standard/rand evaluation broke and the other did not (run folders)")
    p.add_argument("--n", type=positive_int, default=1000, help="the first N test images (default 1000)")
    p.add_argument("--steps", type=positive_int, default=40, help="PGD steps (default 40)")
    p.add_argument("--restarts", type=positive_int, default=10, help="PGD random restarts (default 10)")
    p.add_argument("--step-size", type=positive_float(), default=None, help="PGD step (default 2.5 * eps / steps)")
    p.add_argument("--blackbox-n", type=nonnegative_int, default=100,
                   help="images for the black-box check, Square Attack at the largest eps (0: skip; default 100)")
    p.add_argument("--blackbox-queries", type=positive_int, default=1000, help="Square Attack queries per image")
    p.add_argument("--unbounded-n", type=nonnegative_int, default=200,
                   help="images for the unbounded-attack check (0: skip; default 200)")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="images per batch (default: 500 on a CPU; on a GPU the largest that fits)")
    p.add_argument("--effort-n", type=nonnegative_int, default=200,
                   help="images for the more-restarts-and-steps check (0: skip; default 200)")
    p.add_argument("--json", default=None, help="also write the metrics as JSON to this file (must not exist yet "
                   "unless --overwrite)")
    declare_output_file(p, "json")
    p.add_argument("--force", action="store_true",
                   help="recompute even when the evaluation records hold this evaluation (see advlab leaderboard)")
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
    if args.compare is None and not args.models:
        raise AdvlabError("give at least one CHECKPOINT to evaluate (or --compare RUN_A RUN_B)")
    if args.suite == "classic" and args.norm != "linf":
        raise AdvlabError("--suite classic is L-inf only; use --suite standard for --norm l2")
    if args.eps is None:
        args.eps = [0.1, 0.2, 0.3] if args.norm == "linf" else [0.5 if args.dataset == "cifar10" else 2.0]
    if any(e <= 0 for e in args.eps) and args.suite != "classic":
        raise AdvlabError(f"--eps must be positive radii for --suite {args.suite}; got {args.eps}")
    if any(e < 0 for e in args.eps):
        raise AdvlabError(f"--eps must not be negative; got {args.eps}")
    if args.norm == "linf" and any(e > 1 for e in args.eps):
        raise AdvlabError(f"--eps are L-inf radii on the [0, 1] pixel scale, at most 1; got {args.eps}")
    if args.blackbox_n < 0 or args.unbounded_n < 0 or args.effort_n < 0:
        raise AdvlabError("--blackbox-n, --unbounded-n and --effort-n must be 0 (skip) or positive")
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


def run_compare(run_a: str, run_b: str) -> int:
    """Print the samples one evaluation broke and the other did not (first model of each run)."""
    records = []
    for path in (run_a, run_b):
        load_run(path)  # a clear error if it is not a run folder
        try:
            records.append(json.loads((Path(path) / "samples_0.json").read_text()))
        except FileNotFoundError:
            raise AdvlabError(f"{path} has no per-sample records (samples_0.json); it was not an evaluation with "
                              "--suite standard or rand") from None
        except json.JSONDecodeError as exc:
            raise AdvlabError(f"{path}/samples_0.json is corrupt ({exc.msg})") from None
    diff = compare_runs(records[0], records[1])
    for name, key, other in ((run_a, "only_a", records[0]), (run_b, "only_b", records[1])):
        idx = diff[key]
        by = ", ".join(f"{i} ({other[i]['broken_by']}, step {other[i]['step']})" for i in idx[:50])
        print(f"broken only by {name}: {len(idx)} of {diff['n']}" + (f": {by}" if idx else ""))
    return 0


def run(args: argparse.Namespace) -> int:
    check_args(args)
    if args.compare is not None:
        return run_compare(*args.compare)
    device = device_from(args)
    data = dataset_split(args, "test", args.n)
    if args.norm == "l2":
        bound = math.sqrt(math.prod(data.shape))
        if any(e > bound for e in args.eps):
            raise AdvlabError(f"--eps for L2 must be at most {bound:g} on {data.name} (the whole image); "
                              f"got {args.eps}")
    x, y = data.tensors()
    loaded = []
    for spec in args.models:
        model, meta = resolve_model(spec, args, device)
        check_model_fits(meta, data, spec)
        check_classifier(model, x, data.num_classes, device)
        loaded.append((spec, speed_up(model, args), meta))
    if args.batch_size is None:
        args.batch_size = min(gradient_batch_size(model, data.shape, device, cpu_default=500) for _, model, _ in loaded)
    config = {"models": args.models, "dataset": args.dataset, "n": len(data), "eps": args.eps, "suite": args.suite,
              "norm": args.norm, "seed": args.seed, "precision": args.precision}
    if args.suite == "classic":
        config.update(steps=args.steps, restarts=args.restarts, step_size=args.step_size)
    else:
        config.update(schedule=args.schedule, **suite_config(args).to_dict())
    store, data_hash = RecordStore(), data_sha256(data.images, data.labels)
    results = {}
    with RunDir(args.out, "evaluate", config, overwrite=args.overwrite) as run_dir:
        for i, (spec, model, meta) in enumerate(loaded):
            label = describe(meta)
            if args.suite == "classic":  # recorded, and reused from the records (evaluation/records.py)
                with autocast(device, args.precision):
                    ev, results[spec] = recorded_evaluation(args, store, data_hash, spec, model, meta, label, x, y,
                                                            device)
            else:  # recorded too, under the suite's name
                with autocast(device, args.precision):
                    ev, results[spec] = recorded_suite_evaluation(args, store, data_hash, spec, model, meta, label,
                                                                  x, y, device)
                (run_dir.tmp / f"samples_{i}.json").write_text(json.dumps(ev.per_sample()) + "\n")
            if isinstance(ev, SuiteEvaluation):
                add_suite_section(run_dir, str(i), label, ev)
                print_suite_table(label, ev)
            else:
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


# --- evaluation records (advlab.evaluation.records): the one place evaluate reads and writes them ---
PROTOCOL = "classic"  # FGSM, PGD-CE and PGD-C&W with restarts, per-sample worst case, the diagnostics


def record_settings(args: argparse.Namespace) -> dict:
    """Everything of the command line that shapes an evaluation's result (the images are hashed apart)."""
    return {"norm": "linf", "eps": sorted(args.eps), "steps": args.steps, "restarts": args.restarts,
            "step_size": args.step_size, "seed": args.seed, "blackbox_n": args.blackbox_n,
            "blackbox_queries": args.blackbox_queries, "unbounded_n": args.unbounded_n, "effort_n": args.effort_n,
            "batch_size": args.batch_size, "dataset": args.dataset,
            **({"precision": args.precision} if args.precision != "fp32" else {})}


def recorded_evaluation(args, store, data_hash, spec, model, meta, label, x, y, device
                        ) -> tuple[DefenseEvaluation, dict]:
    """The evaluation of one model: its record when the records hold it (unless --force), else computed
    and recorded."""
    def compute() -> dict:
        start, cpu = time.perf_counter(), time.process_time()
        ev = evaluate_defense(model, x, y, args.eps, args.steps, args.restarts, args.step_size, args.blackbox_n,
                              args.blackbox_queries, args.unbounded_n, args.seed, args.batch_size, device,
                              args.progress, effort_n=args.effort_n)
        return {"label": label, **ev.to_record(), "wall_seconds": time.perf_counter() - start,
                "cpu_seconds": time.process_time() - cpu, "device": str(device), "threads": torch.get_num_threads()}

    record, reused = recorded(store, model_hash(spec, model), PROTOCOL, record_settings(args), data_hash,
                              model_summary(meta, label, spec), compute, force=args.force)
    if reused:
        print(f"{spec}: this evaluation is in the records ({store.path}, key {record.key[:12]}, "
              f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(record.created))}); reusing it (--force recomputes)")
    result = {k: v for k, v in record.result.items() if k != "broken_at"}
    return DefenseEvaluation.from_record(record.result), {**result, "reused_record": reused, "record": record.key}


def suite_config(args: argparse.Namespace) -> SuiteConfig:
    """The standard/rand suite's settings from the command line (the schedule's, then explicit options)."""
    return SuiteConfig.schedule(args.schedule, steps=args.iterations, targets=args.targets, fab=args.fab,
                                square_queries=args.square_queries, eot=args.eot, seed=args.seed)


def suite_record_settings(args: argparse.Namespace) -> dict:
    """What shapes a standard/rand evaluation's result: the norm, the eps, the schedule's every setting, the
    sizes of the diagnostics' checks and the batch size (the images are hashed apart)."""
    return {"norm": args.norm, "eps": sorted(args.eps), **suite_config(args).to_dict(),
            "unbounded_n": args.unbounded_n, "batch_size": args.batch_size, "dataset": args.dataset,
            **({"precision": args.precision} if args.precision != "fp32" else {})}


def recorded_suite_evaluation(args, store, data_hash, spec, model, meta, label, x, y, device
                              ) -> tuple[SuiteEvaluation, dict]:
    """The standard or rand suite on one model: its record when the records hold it (unless --force),
    else run and recorded under the suite's name as the protocol."""
    def compute() -> dict:
        start, cpu = time.perf_counter(), time.process_time()
        ev = run_suite(model, x, y, args.eps, args.norm, args.suite, config=suite_config(args),
                       batch_size=args.batch_size, device=device, progress=args.progress, unbounded_n=args.unbounded_n)
        return {"label": label, **ev.to_record(), "wall_seconds": time.perf_counter() - start,
                "cpu_seconds": time.process_time() - cpu, "device": str(device), "threads": torch.get_num_threads()}

    record, reused = recorded(store, model_hash(spec, model), args.suite, suite_record_settings(args), data_hash,
                              model_summary(meta, label, spec), compute, force=args.force)
    if reused:
        print(f"{spec}: this evaluation is in the records ({store.path}, key {record.key[:12]}, "
              f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(record.created))}); reusing it (--force recomputes)")
    result = {k: v for k, v in record.result.items() if k != "samples"}
    return SuiteEvaluation.from_record(record.result), {**result, "reused_record": reused, "record": record.key}
# --- end of evaluation records ---


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


def suite_rows(ev: SuiteEvaluation) -> list[list]:
    """Table rows: eps, robust accuracy after each member (cumulative), then the worst case."""
    worst = ev.worst_case()
    return [[e, *[ev.accuracy_after[m][i] for m in ev.members], worst[i]] for i, e in enumerate(ev.eps)]


def add_suite_section(run_dir: RunDir, key: str, label: str, ev: SuiteEvaluation) -> None:
    clean_point = [0.0, *ev.eps]
    curves = {f"after {m}": (clean_point, [ev.clean_accuracy, *acc]) for m, acc in ev.accuracy_after.items()}
    fig = robust_curve_figure(curves, run_dir.figure_path(f"evaluate_{key}.png"), ev.norm,
                              f"{label}: robust accuracy, {ev.suite} suite ({ev.n} test images)")
    fired = [d for d in ev.diagnostics if d.fired]
    verdict = (f"Gradient masking suspected ({len(fired)} of {len(ev.diagnostics)} checks fired): "
               + " ".join(f"[{d.name}] {d.message}" for d in fired)) if fired else \
        "No sign of gradient masking: " + " ".join(d.message for d in ev.diagnostics)
    d = ev.to_dict()
    cost = "; ".join(f"{m}: {c['backward'] / ev.n:.1f} gradient calls and {c['queries'] / ev.n:.0f} queries per image"
                     for m, c in d["cost"].items())
    run_dir.add_section(f"Robustness of {label} ({ev.suite} suite, {ev.norm})",
                        f"Clean accuracy {ev.clean_accuracy:.4f} on {ev.n} test images. "
                        + " ".join(n[0].upper() + n[1:] + "." for n in ev.notes)
                        + f" Robust accuracy after each attack of the ensemble, each run on the samples the earlier "
                        f"ones left. Cost: {cost}. {verdict}",
                        table={"columns": ["eps", *[f"after {m}" for m in ev.members], "worst case"],
                               "rows": suite_rows(ev)},
                        figures=[(fig.name, f"robust accuracy against {ev.norm} eps after each attack of the "
                                  "ensemble")],
                        key=f"evaluate_{key}")


def print_suite_table(label: str, ev: SuiteEvaluation) -> None:
    names = [f"after {m}" for m in ev.members] + ["worst case"]
    print(f"{label}: clean accuracy {ev.clean_accuracy:.4f} on {ev.n} images ({ev.suite} suite, {ev.norm})")
    for note in ev.notes:
        print(f"  note: {note}")
    print("  eps    " + "  ".join(f"{n[:16]:>16}" for n in names))
    for row in suite_rows(ev):
        print(f"  {row[0]:<6g} " + "  ".join(f"{v:>16.4f}" for v in row[1:]))
    for m, c in ev.to_dict()["cost"].items():
        print(f"  {m}: {c['backward'] / ev.n:.1f} gradient calls, {c['queries'] / ev.n:.0f} queries per image")
    for d in ev.diagnostics:
        print(f"  [{'FIRED' if d.fired else 'ok'}] {d.name}: {d.message}")


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
