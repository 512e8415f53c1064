"""advlab audit: is my training folder poisoned, and which files? (advlab.detection.audit)"""

from __future__ import annotations

import argparse
from pathlib import Path

from advlab.cli.common import (
    BATCH_SIZE_HELP,
    MODEL_SPEC_HELP,
    add_convert_mode_arg,
    add_device_arg,
    add_model_spec_args,
    add_out_arg,
    add_progress_arg,
    data_line,
    device_from,
    image_size,
    nonnegative_int,
    open_fraction,
    positive_int,
    record_batch_size,
    run_batch_size,
    seed_int,
    spec_options,
)
from advlab.data import load_class_map
from advlab.detection import DETECTORS
from advlab.detection.audit import audit_folder, audit_model, load_audit_folders
from advlab.detection.representations import PENULTIMATE
from advlab.models import create_model
from advlab.report.audit import add_audit_sections
from advlab.report.run import RunDir
from advlab.runtime import gradient_batch_size


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="find the poisoned files of a training folder (SPECTRE, spectral, clustering)",
                       description="Audit a training folder of <class>/ image subfolders (or a folder with train/ "
                       "and test/ inside): representations of every image at a named layer of the model trained on "
                       "it (--model, or advlab trains one with the folder's recipe), a detector per class, and the "
                       "list of suspicious files with their scores (suspicious.csv in the run folder), the top-6 PCA "
                       "projection of each class, and optionally a model retrained without them.")
    p.add_argument("folder", help="the training folder: FOLDER/<class>/*.png|jpg, or FOLDER/train and FOLDER/test")
    p.add_argument("--model", default=None, help="the model trained on the folder: " + MODEL_SPEC_HELP.replace(
                   "(trained on --dataset once, then cached)", "(trained on the folder)") + " (default: advlab trains "
                   "the recipe chosen from the data)")
    add_model_spec_args(p)
    p.add_argument("--test", default=None, help="a folder of clean test images of the same classes (default: "
                   "FOLDER/test when there is one); needed to train or retrain")
    p.add_argument("--method", choices=sorted(DETECTORS), default="spectre", help="detector (default: %(default)s)")
    p.add_argument("--layer", default=PENULTIMATE, help="the layer whose outputs are the representations "
                   "(default: the input of the last linear layer)")
    p.add_argument("--poison-fraction", type=open_fraction, default=None, help="upper bound on each class's poison "
                   "share; 1.5x as many files are removed (default: estimated per class: files whose score lies over "
                   "10 robust standard deviations above the class's median; clustering: its own minority-cluster "
                   "test)")
    p.add_argument("--retrain", action="store_true", help="retrain the same recipe without the suspicious files "
                   "and report clean accuracy (and attack success, with --triggered-test) before and after")
    p.add_argument("--triggered-test", default=None, help="a folder of images carrying the trigger, in subfolders "
                   "named by their true class: attack success before and after")
    p.add_argument("--target", default=None, help="the backdoor's target class for --triggered-test (default: the "
                   "class with the most suspicious files)")
    p.add_argument("--image-size", type=image_size, default=None, help="side images are resized and centre-cropped "
                   "to (default: the images' own)")
    p.add_argument("--channels", type=int, choices=(1, 3), default=None)
    add_convert_mode_arg(p)
    p.add_argument("--class-map", default=None, help="folder name -> the model's output index (JSON or lines)")
    p.add_argument("--lazy", action=argparse.BooleanOptionalAction, default=None,
                   help="read the folder batch by batch from disk (default: when it would take over 256 MiB)")
    p.add_argument("--workers", type=nonnegative_int, default=None, help="decoding processes for lazy reading")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="epochs when advlab trains (default: the recipe's)")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--batch-size", type=positive_int, default=None, help=BATCH_SIZE_HELP + " (training keeps its "
                   "recipe's batch)")
    add_device_arg(p)
    add_out_arg(p)
    add_progress_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    class_map = load_class_map(args.class_map) if args.class_map else None
    data, test, triggered, train_root = load_audit_folders(
        args.folder, args.test, args.triggered_test, class_map, image_size=args.image_size, channels=args.channels,
        convert_mode=args.convert_mode,
        lazy=args.lazy, workers=args.workers)
    root = Path(args.folder).expanduser()
    if args.target is not None:
        data.class_index(args.target)  # an unknown class fails here, before any work
    device = device_from(args)
    model, config = audit_model(args.model, spec_options(args), data, train_root, device, args.retrain, args.epochs,
                                args.seed)
    if model is None:
        print(f"recipe: {config.data_recipe} for {config.model}, {config.epochs} epochs")
    print(data_line(*(d for d in (data, test, triggered) if d is not None)))

    def fitting() -> int:
        probe = model[0] if model is not None else create_model(
            config.model, config.dataset, data.shape[0], data.shape[-1], data.num_classes, **config.model_extra)
        return gradient_batch_size(probe, data.shape, device, cpu_default=256)

    batch = run_batch_size(args, fitting, device)
    run_config = {"folder": str(root), "model": args.model, "method": args.method, "layer": args.layer,
                  "poison_fraction": args.poison_fraction, "retrain": args.retrain, "test": str(args.test or ""),
                  "triggered_test": args.triggered_test, "target": args.target, "seed": args.seed,
                  "data": data.describe()}
    with RunDir(args.out, "audit", run_config, overwrite=args.overwrite) as run_dir:
        found = audit_folder(data, test, model, config, args.method, args.layer, args.poison_fraction, args.retrain,
                             triggered, args.target, device, args.progress, batch_size=batch)
        suspicious = add_audit_sections(run_dir, found, args.method)
        record_batch_size(run_dir, batch)
        out = run_dir.commit()
    for s in suspicious[:20]:
        print(f"  {s['score']:12.4g}  {s['class']:<12} {s['file']}")
    if len(suspicious) > 20:
        print(f"  ... {len(suspicious) - 20} more")
    print(f"suspicious files: {out / 'suspicious.csv'}\nrun folder: {out}")
    return 0
