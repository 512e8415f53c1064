"""advlab eval: clean accuracy and confusion matrix of a checkpoint or a named model."""

from __future__ import annotations

import argparse

from advlab.cli.common import (
    MODEL_SPEC_HELP,
    add_data_args,
    add_device_arg,
    add_model_spec_args,
    add_out_arg,
    add_progress_arg,
    check_model_fits,
    dataset_split,
    device_from,
    positive_int,
    resolve_model,
)
from advlab.evaluation import evaluate_clean
from advlab.report.figures import confusion_matrix_figure
from advlab.report.run import RunDir


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="clean accuracy and confusion matrix",
                       description="Evaluate a classifier on a test split: accuracy, per-class accuracy and "
                       "the confusion matrix, written to a run folder with its report.")
    p.add_argument("model", help=MODEL_SPEC_HELP)
    add_model_spec_args(p)
    add_data_args(p)
    p.add_argument("--n", type=positive_int, default=None, help="evaluate the first N test images (default: all)")
    add_device_arg(p)
    add_out_arg(p)
    add_progress_arg(p)
    p.set_defaults(func=run)


def add_clean_section(run_dir: RunDir, model, meta: dict, data, device, label: str) -> dict:
    result = evaluate_clean(model, data, device)
    fig = confusion_matrix_figure(result.confusion, data.classes, run_dir.figure_path("confusion.png"),
                                  f"{label}: accuracy {result.accuracy:.4f}")
    table = {"columns": ["class", "accuracy", "images"],
             "rows": [[c, a, int(n)] for c, a, n in zip(data.classes, result.per_class_accuracy,
                                                        result.confusion.sum(1), strict=True)]}
    run_dir.add_section("Clean accuracy", f"{label} on {result.n} {data.name} images: accuracy "
                        f"{result.accuracy:.4f}, mean top-1 confidence {result.mean_confidence:.3f}.",
                        table=table, figures=[(fig.name, "confusion matrix (rows: true class)")], key="clean")
    return result.to_dict()


def run(args: argparse.Namespace) -> int:
    device = device_from(args)
    data = dataset_split(args, "test", args.n)
    model, meta = resolve_model(args.model, args, device)
    check_model_fits(meta, data, args.model)
    with RunDir(args.out, "eval", {"model": args.model, "dataset": args.dataset, "n": len(data)},
                overwrite=args.overwrite) as run_dir:
        run_dir.metrics["clean"] = add_clean_section(run_dir, model, meta, data, device, args.model)
        out = run_dir.commit()
    print(f"accuracy {run_dir.metrics['clean']['accuracy']:.4f} on {len(data)} images\nreport: {out / 'report.html'}")
    return 0
