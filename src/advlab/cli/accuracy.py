"""advlab accuracy (also `advlab eval`, its older name): clean accuracy and confusion matrix of a
checkpoint or a named model. Robustness is `advlab evaluate`."""

from __future__ import annotations

import argparse

from advlab.cli.common import (
    BATCH_SIZE_HELP,
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
    record_batch_size,
    resolve_model,
    run_batch_size,
)
from advlab.report.run import RunDir
from advlab.report.sections import add_clean_section
from advlab.runtime import gradient_batch_size


def add_parser(sub: argparse._SubParsersAction) -> None:
    for name, summary in (("accuracy", "clean accuracy and confusion matrix (robustness: advlab evaluate)"),
                          ("eval", "the older name of advlab accuracy")):
        p = sub.add_parser(name, help=summary,
                           description="Evaluate a classifier on a test split: accuracy, per-class accuracy and "
                           "the confusion matrix, written to a run folder with its report.")
        p.add_argument("model", help=MODEL_SPEC_HELP)
        add_model_spec_args(p)
        add_data_args(p)
        p.add_argument("--n", type=positive_int, default=None, help="evaluate the first N test images (default: all)")
        p.add_argument("--batch-size", type=positive_int, default=None, help=BATCH_SIZE_HELP)
        add_device_arg(p)
        add_out_arg(p)
        add_progress_arg(p)
        p.set_defaults(func=run, command=name)


def run(args: argparse.Namespace) -> int:
    device = device_from(args)
    data = dataset_split(args, "test", args.n)
    model, meta = resolve_model(args.model, args, device)
    check_model_fits(meta, data, args.model)
    batch = run_batch_size(args, lambda: gradient_batch_size(model, data.shape, device, cpu_default=500), device)
    with RunDir(args.out, args.command, {"model": args.model, "dataset": args.dataset, "n": len(data)},
                overwrite=args.overwrite) as run_dir:
        run_dir.metrics["clean"] = add_clean_section(run_dir, model, meta, data, device, args.model, batch)
        record_batch_size(run_dir, batch)
        out = run_dir.commit()
    print(f"accuracy {run_dir.metrics['clean']['accuracy']:.4f} on {len(data)} images\nreport: {out / 'report.html'}")
    return 0
