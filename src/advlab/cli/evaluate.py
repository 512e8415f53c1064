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
import time

from advlab.cli.common import (
    MODEL_SPEC_HELP,
    add_data_args,
    add_device_arg,
    add_model_spec_args,
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
    record_batch_size,
    resolve_model,
    run_batch_size,
    seed_int,
    speed_up,
)
from advlab.errors import AdvlabError
from advlab.evaluation.records import RecordStore, data_sha256
from advlab.evaluation.robustness import EvaluationSettings, evaluate_robustness
from advlab.evaluation.suite import FAB_MODES, SCHEDULES, SUITES, check_classifier
from advlab.report.evaluation_sections import add_comparison, add_evaluation_section, compare_run_folders
from advlab.report.run import RunDir
from advlab.runtime import atomic_write, autocast, gradient_batch_size


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
                   help="one or more model specs: " + MODEL_SPEC_HELP + "; the model-spec options apply to each")
    add_model_spec_args(p)
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
                   help="standard suite's budget: fast (default: APGD-T toward the 5 classes ranked highest where "
                   "APGD-CE ended, a fresh start each, no FAB-T) or autoattack (the authors': 9 targets, FAB-T on "
                   "every remaining sample)")
    p.add_argument("--targets", type=positive_int, default=None,
                   help="target classes of APGD-T and FAB-T (default: the schedule's, 5 or 9)")
    p.add_argument("--fab", default=None, choices=FAB_MODES,
                   help="where FAB-T runs: off, unconverged (where APGD-T had not converged: its last checkpoint "
                   "did not halve the step) or all (default: the schedule's)")
    p.add_argument("--iterations", type=positive_int, default=100, help="APGD and FAB iterations (default 100)")
    p.add_argument("--square-queries", type=positive_int, default=5000, help="Square queries per image in the "
                   "standard suite (default 5000)")
    p.add_argument("--eot", type=positive_int, default=None, help="gradient draws per step in the rand suite "
                   "(default: the schedule's, 8 fast, 20 autoattack)")
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
                   help="images per batch (default: 500 on a CPU; on a GPU the largest that fits). A batch that runs "
                   "out of memory is retried at half the size, also when given; the size used is reported")
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


def run_compare(run_a: str, run_b: str) -> int:
    print(compare_run_folders(run_a, run_b))
    return 0


SETTINGS = ("suite", "norm", "seed", "precision", "steps", "restarts", "step_size", "blackbox_n", "blackbox_queries",
            "unbounded_n", "effort_n", "schedule", "targets", "fab", "iterations", "square_queries", "eot", "dataset")


def run(args: argparse.Namespace) -> int:
    if args.compare is None and not args.models:
        raise AdvlabError("give at least one CHECKPOINT to evaluate (or --compare RUN_A RUN_B)")
    settings = EvaluationSettings(eps=None if args.eps is None else tuple(args.eps),
                                  **{k: getattr(args, k) for k in SETTINGS})
    settings.check()
    if args.compare is not None:
        return run_compare(*args.compare)
    device = device_from(args)
    data = dataset_split(args, "test", args.n)
    settings.check(data.shape)
    x, y = data.tensors()
    loaded = []
    for spec in args.models:
        model, meta = resolve_model(spec, args, device)
        check_model_fits(meta, data, spec)
        check_classifier(model, x, data.num_classes, device)
        loaded.append((spec, speed_up(model, args), meta))
    batch = run_batch_size(args, lambda: min(gradient_batch_size(m, data.shape, device, cpu_default=500)
                                             for _, m, _ in loaded), device)
    settings = EvaluationSettings(eps=tuple(settings.radii), batch_size=batch.start,
                                  **{k: getattr(args, k) for k in SETTINGS})
    config = {"models": args.models, "dataset": args.dataset, "n": len(data), **settings.config()}
    store, data_hash = RecordStore(), data_sha256(data.images, data.labels)
    results = {}
    with RunDir(args.out, "evaluate", config, overwrite=args.overwrite) as run_dir:
        for i, (spec, model, meta) in enumerate(loaded):
            with autocast(device, args.precision):
                outcome = evaluate_robustness(model, meta, spec, x, y, settings, device, args.progress, store,
                                              args.force, data_hash, batch)
            if outcome.reused:
                print(f"{spec}: this evaluation is in the records ({store.path}, key {outcome.record.key[:12]}, "
                      f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(outcome.record.created))}); reusing it "
                      "(--force recomputes)")
            if settings.suite != "classic":
                (run_dir.tmp / f"samples_{i}.json").write_text(json.dumps(outcome.evaluation.per_sample()) + "\n")
            results[spec] = outcome.result
            print(add_evaluation_section(run_dir, str(i), outcome.result["label"], outcome.evaluation))
        if len(loaded) > 1:
            add_comparison(run_dir, results)
        run_dir.metrics["evaluations"] = results
        record_batch_size(run_dir, batch)
        if args.json:
            atomic_write(args.json, lambda p: p.write_text(json.dumps({"config": config, "evaluations": results},
                                                                       indent=2) + "\n"))
        out = run_dir.commit()
    print(f"report: {out / 'report.html'}")
    return 0


