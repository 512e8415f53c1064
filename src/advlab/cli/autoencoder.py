"""advlab autoencoder-attack: make natural images reconstruct as other images (Tabacof et al. 2016;
Kos, Fischer and Song 2017), over a sweep of budgets, with the lecture's figure.

The command behind `advlab.evaluation.autoencoder` (load_or_train_autoencoder, autoencoder_sweep)
and `advlab.report.autoencoder.autoencoder_section`."""

from __future__ import annotations

import argparse

import torch

from advlab.cli.common import (
    add_data_args,
    add_run_args,
    check_model_fits,
    dataset_split,
    device_from,
    float_list,
    nonnegative_float,
    positive_int,
    resolve_model,
    seed_int,
)
from advlab.errors import AdvlabError
from advlab.evaluation.autoencoder import MODES, autoencoder_sweep, load_or_train_autoencoder
from advlab.report.autoencoder import autoencoder_section, sweep_lines
from advlab.report.run import RunDir
from advlab.training import default_config

DEFAULT_BUDGETS = {"linf": "0.05,0.1,0.2,0.3", "l2": "1,2,3,4"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("autoencoder-attack", help="make images reconstruct as other images (latent/output attacks)",
                       description="Attack an autoencoder: perturb source images so that their reconstructions "
                       "become target images of other classes, by matching the target's latent code or its "
                       "reconstruction, for a sweep of budgets. Reports input distortion against the MSE/SSIM of "
                       "the reconstruction to the target, and the share a separate classifier reads as the "
                       "target's class.")
    p.add_argument("--autoencoder", default="conv_autoencoder", help="conv_autoencoder, conv_vae (trained with the "
                   "reconstruction recipe, cached) or a .safetensors checkpoint (default: %(default)s)")
    p.add_argument("--classifier", default=None, help="classifier that reads the reconstructions: a checkpoint, an "
                   "architecture name, or 'none' (default: the data set's default model)")
    p.add_argument("--mode", default="latent,output", help="latent, output or both (default: %(default)s)")
    p.add_argument("--norm", choices=("linf", "l2"), default="linf", help="budget norm (default: %(default)s)")
    p.add_argument("--budgets", type=float_list, default=None,
                   help="comma-separated eps values (default linf: 0.05,0.1,0.2,0.3; l2: 1,2,3,4)")
    p.add_argument("--penalty", type=nonnegative_float(), default=None,
                   help="also run the penalized attack with this lambda")
    p.add_argument("--steps", type=positive_int, default=100, help="attack iterations (default: %(default)s)")
    p.add_argument("--n", type=positive_int, default=100, help="source images (default: %(default)s)")
    p.add_argument("--epochs", type=positive_int, default=None, help="autoencoder training epochs (default: recipe)")
    p.add_argument("--train-subset", type=positive_int, default=None, help="train the autoencoder on N images")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the source/target pairing (default: %(default)s)")
    p.add_argument("--random-subset", action="store_true", help="draw sources and the target pool by a fixed random "
                   "permutation (--seed) instead of the first images (a CIFAR-10 image folder is sorted by class)")
    add_data_args(p)
    add_run_args(p, run)


def run(args: argparse.Namespace) -> int:
    device = device_from(args)
    modes = [m.strip() for m in args.mode.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if not modes or bad:
        raise AdvlabError(f"unknown attack mode {', '.join(bad) or args.mode!r}; choose latent, output or both")
    budgets = args.budgets or float_list(DEFAULT_BUDGETS[args.norm])
    if args.norm == "linf" and max(budgets) > 1:
        raise AdvlabError(f"Linf budgets must lie in [0, 1] (pixel scale), got {max(budgets):g}")
    data = dataset_split(args, "test")
    autoencoder, ae_meta = load_or_train_autoencoder(args.autoencoder, args.dataset, device, args.epochs,
                                                     args.train_subset, args.data_dir, args.progress)
    check_model_fits(ae_meta, data, args.autoencoder)
    classifier = None
    if (args.classifier or "").lower() != "none":
        spec = args.classifier or default_config(args.dataset).model
        classifier, meta = resolve_model(spec, args, device)
        check_model_fits(meta, data, spec)
    if args.random_subset:
        data = data.subset(torch.randperm(len(data), generator=torch.Generator().manual_seed(args.seed)))
    x, y = (t.to(device) for t in data.head(args.n)[:])
    pool_x, pool_y = (t.to(device) for t in data.subset(slice(args.n, args.n + 1000))[:])
    config = {"autoencoder": args.autoencoder, "classifier": args.classifier, "dataset": args.dataset,
              "modes": modes, "norm": args.norm, "budgets": budgets, "steps": args.steps, "n": args.n,
              "penalty": args.penalty, "seed": args.seed, "random_subset": args.random_subset}
    with RunDir(args.out, "autoencoder-attack", config, overwrite=args.overwrite) as run_dir:
        sweep = autoencoder_sweep(autoencoder, classifier, x, y, pool_x, pool_y, modes, args.norm, budgets,
                                  args.steps, args.seed, args.penalty)
        autoencoder_section(run_dir, sweep, f"{args.autoencoder} on {args.dataset} (test MSE "
                            f"{ae_meta.get('test_mse', float('nan')):.4f})")
        run_dir.metrics["autoencoder"] = sweep.metrics
        out = run_dir.commit()
    print("\n".join(sweep_lines(sweep.metrics)))
    print(f"report: {out / 'report.html'}")
    return 0
