"""advlab backdoor: poison, train, detect from representations, remove, retrain, and compare.

The command behind `advlab.evaluation.backdoor.run_backdoor` (the pipeline) and
`advlab.report.backdoor.add_backdoor_sections` (its report); see docs/backdoor.md.
"""

from __future__ import annotations

import argparse

import torch

from advlab.cli.common import (
    add_data_args,
    add_model_spec_args,
    add_run_args,
    dataset_split,
    declare_output_folder,
    device_from,
    positive_float,
    positive_int,
    probability,
    record_batch_size,
    seed_int,
    spec_options,
)
from advlab.detection.representations import PENULTIMATE
from advlab.detection.spectre import MAX_K
from advlab.errors import AdvlabError
from advlab.evaluation.backdoor import DEFENSES, BackdoorSettings, run_backdoor, summary_lines
from advlab.models.spec import spec_kind
from advlab.poisoning import save_poisoned_folder
from advlab.poisoning.triggers import LOCATIONS, PATTERNS, TRIGGERS
from advlab.report.backdoor import add_backdoor_sections
from advlab.report.run import RunDir


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backdoor", help="poison, train, detect (SPECTRE, spectral, clustering), retrain, compare",
                       description="Backdoor poisoning and its defenses end to end: poison the training set, train, "
                       "extract representations, detect and remove the poisons, retrain, and report clean accuracy "
                       "and attack success before and after. Trained models are cached by their full recipe.")
    add_data_args(p, dataset="cifar10")
    p.add_argument("--trigger", choices=TRIGGERS, default="patch", help="trigger (default: %(default)s)")
    p.add_argument("--patch-size", type=positive_int, default=3, help="patch side in pixels (default: %(default)s)")
    p.add_argument("--patch-location", choices=LOCATIONS, default="bottom-right")
    p.add_argument("--patch-pattern", choices=PATTERNS, default="checkerboard")
    p.add_argument("--blend-alpha", type=probability, default=0.1,
                   help="noise/blend trigger weight (default: %(default)s)")
    p.add_argument("--amplitude", type=probability, default=20 / 255, help="periodic trigger amplitude in [0, 1] pixel "
                   "units (default: 20/255, Barni et al. 2019)")
    p.add_argument("--cycles", type=positive_float(), default=6.0,
                   help="periodic trigger cycles across the image (default: 6)")
    p.add_argument("--pixels", type=int, choices=(1, 2, 3), default=1, help="pixel trigger: SPECTRE's 1-3 pixels")
    p.add_argument("--target", default=None, help="target class name or index (default: deer, else class 0)")
    p.add_argument("--source", default=None, help="take poisons from this class only (default: every other class)")
    p.add_argument("--n-poison", type=positive_int, default=500, help="number of poisoned images (default: 500)")
    p.add_argument("--defense", default="spectre", help="comma-separated defenses from spectre, spectral, "
                   "clustering, or 'all' (default: spectre)")
    p.add_argument("--retrain", default=None, help="comma-separated defenses to retrain after, 'none', or (default) "
                   "all requested ones")
    p.add_argument("--layer", default=PENULTIMATE, help="representation layer: 'penultimate' (the input of the last "
                   "linear layer) or a module name as `advlab inspect MODEL` lists them (default: %(default)s)")
    p.add_argument("--scan", choices=("target", "all"), default="target", help="classes the defenses examine "
                   "(default: the target class, SPECTRE's setting)")
    p.add_argument("--k", type=positive_int, default=None, help="SPECTRE's PCA dimension (default: chosen by op_k)")
    p.add_argument("--max-k", type=positive_int, default=MAX_K, help="cap on SPECTRE's k sweep (default: %(default)s)")
    p.add_argument("--model", default=None, help="architecture trained from scratch (default: the data set's "
                   "default), or a model spec fine-tuned on the poisoned data with the recipe's optimizer and "
                   "epochs: an advlab checkpoint, timm:NAME, PATH.py:FUNCTION or package.module:FUNCTION (runs "
                   "your code), TorchScript or .onnx with trainable parameters; fine-tuned models are not cached")
    add_model_spec_args(p)
    p.add_argument("--width", type=positive_int, default=None, help="cifar_cnn base width (default: 32; smaller "
                   "trains faster)")
    p.add_argument("--epochs", type=positive_int, default=None, help="training epochs (default: the recipe's)")
    p.add_argument("--lr", type=positive_float(), default=None)
    p.add_argument("--batch-size", type=positive_int, default=None, help="training batch (default: the recipe's); "
                   "the passes that read representations and accuracy start at 500 and halve on out-of-memory")
    p.add_argument("--train-subset", type=positive_int, default=None, help="train on this many random images")
    p.add_argument("--n-test", type=positive_int, default=None, help="evaluate on a fixed random subset of N "
                   "test images (default: all)")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--force", action="store_true", help="retrain even when the cache has a model")
    p.add_argument("--save-poisoned", default=None, help="also write the poisoned set as an image folder with a "
                   "separate manifest.json of the poisoned files")
    declare_output_folder(p, "save_poisoned")
    add_run_args(p, run)


def _names(text: str | None, allowed, what: str) -> tuple[str, ...] | None:
    if text is None:
        return None
    if text == "all":
        return tuple(allowed)
    if text == "none":
        return ()
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        raise AdvlabError(f"unknown {what} {', '.join(bad) or repr(text)}; choose from {', '.join(allowed)}, all")
    return names


def trigger_options(args: argparse.Namespace) -> dict:
    if args.trigger == "patch":
        return {"size": args.patch_size, "location": args.patch_location, "pattern": args.patch_pattern}
    if args.trigger == "noise":
        return {"alpha": args.blend_alpha}
    if args.trigger == "blend":
        raise AdvlabError("the blend trigger needs an image; from the command line use --trigger noise "
                          "(Chen et al. 2017's random-noise pattern) or the Python API with BlendTrigger(image=...)")
    if args.trigger == "periodic":
        return {"amplitude": args.amplitude, "cycles": args.cycles}
    return {"pixels": args.pixels}


def run(args: argparse.Namespace) -> int:
    device = device_from(args)
    defenses = _names(args.defense, DEFENSES, "defense") or ()
    foreign = args.model is not None and spec_kind(args.model) is not None
    overrides = {k: v for k, v in {"model": None if foreign else args.model, "epochs": args.epochs, "lr": args.lr,
                                   "batch_size": args.batch_size}.items() if v is not None}
    if args.width is not None:
        if foreign:
            raise AdvlabError("--width sets cifar_cnn's width; it does not apply to --model " + args.model)
        overrides["model_extra"] = {"width": args.width}
    options = spec_options(args).given()
    if options and not foreign:
        raise AdvlabError(f"--{next(iter(options)).replace('_', '-')} applies to a model spec (timm:NAME, "
                          "PATH.py:FUNCTION, ...) given as --model, not to an architecture name")
    settings = BackdoorSettings(dataset=args.dataset, trigger=args.trigger, trigger_options=trigger_options(args),
                                target=args.target, source=args.source, n_poison=args.n_poison, defenses=defenses,
                                retrain=_names(args.retrain, defenses, "defense to retrain"),
                                train_overrides=overrides, train_subset=args.train_subset, layer=args.layer,
                                scan=args.scan, k=args.k, max_k=args.max_k, seed=args.seed, use_cache=not args.force,
                                data_dir=args.data_dir, model_spec=args.model if foreign else None,
                                spec_options={k: list(v) if isinstance(v, tuple) else v for k, v in options.items()})
    train, test = dataset_split(args, "train"), dataset_split(args, "test")
    if args.n_test and args.n_test < len(test):  # a fixed random subset: folder copies are sorted by class
        order = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[: args.n_test]
        test = test.subset(order.sort().values, name=f"{test.name}-{args.n_test}")
    config = {k: v for k, v in vars(settings).items()}
    with RunDir(args.out, "backdoor", {"settings": config, "device": str(device)}, overwrite=args.overwrite) as run_dir:
        result = run_backdoor(settings, train, test, device, args.progress)
        add_backdoor_sections(run_dir, result, test)
        run_dir.metrics = result.metrics
        record_batch_size(None, result.batch)
        if args.save_poisoned:
            run_dir.metrics["poisoned_folder"] = str(save_poisoned_folder(result.poisoned, args.save_poisoned))
        out = run_dir.commit()
    print("\n".join(summary_lines(run_dir.metrics)))
    print(f"report: {out / 'report.html'}")
    return 0
