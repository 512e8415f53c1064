"""advlab physical / advlab patch: adversarial examples that survive a print-and-photo simulation
(Kurakin et al. 2016's destruction rate; Athalye et al. 2018's EOT) and a universal printable patch.

The commands behind `advlab.evaluation.physical` (destruction_table, patch_sweep) and
`advlab.report.physical` (their sections)."""

from __future__ import annotations

import argparse

from advlab.attacks.physical import PrintPhotoSimulation, PrintPhotoTransforms
from advlab.cli.common import (
    MODEL_SPEC_HELP,
    add_data_args,
    add_model_spec_args,
    add_run_args,
    check_model_fits,
    dataset_split,
    device_from,
    number_list,
    positive_float,
    positive_int,
    record_batch_size,
    resolve_model,
    run_batch_size,
    seed_int,
)
from advlab.errors import AdvlabError
from advlab.evaluation.physical import PHYSICAL_ATTACKS, destruction_table, patch_sweep, pick
from advlab.report.physical import destruction_lines, destruction_section, patch_lines, patch_section
from advlab.report.run import RunDir
from advlab.runtime import gradient_batch_size
from advlab.training import default_config


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("physical", help="destruction rates of FGSM, PGD and EOT-PGD under a print-and-photo "
                       "simulation", description="Attack test images with FGSM, PGD and Expectation over "
                       "Transformation PGD, pass the results through a print-and-photo simulation that no attack "
                       "optimized (real JPEG, resampling, gamma, colour, noise, crops, rotations) and report "
                       "Kurakin et al.'s destruction rate next to their photographed figures.")
    p.add_argument("--model", default=None, help=MODEL_SPEC_HELP + " (default: mnist_cnn on mnist, cifar_cnn on "
                   "cifar10)")
    add_model_spec_args(p)
    p.add_argument("--attack", default="fgsm,pgd,eot", help="comma-separated: fgsm, pgd, eot, bim (Kurakin et al.'s "
                   "basic iterative method) (default: %(default)s)")
    p.add_argument("--eps", type=number_list, default=None, help="Linf budgets, e.g. 0.1,0.2,0.3 or 4/255,8/255 "
                   "(default: 0.1,0.2,0.3 on mnist, 4/255,8/255,16/255 otherwise)")
    p.add_argument("--steps", type=positive_int, default=20, help="PGD and EOT iterations (default: %(default)s)")
    p.add_argument("--samples", type=positive_int, default=8, help="EOT transformations per step (default: "
                   "%(default)s)")
    p.add_argument("--n", type=positive_int, default=200, help="test images (default: %(default)s)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="images per attack batch (default: 100, "
                   "or fewer when the device's memory holds fewer). A batch that runs out of memory is retried at "
                   "half the size, also when given; the size used is reported")
    p.add_argument("--random-subset", action="store_true", help="take the N test images by a fixed random "
                   "permutation (--seed) instead of the first N (a CIFAR-10 image folder is sorted by class)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the attacks and the simulation (default: 0)")
    add_data_args(p)
    add_run_args(p, run_physical)

    q = sub.add_parser("patch", help="a universal printable patch that turns any image into a target class",
                       description="Train one patch per size that, pasted at a random position, scale and rotation "
                       "onto any image and photographed, makes the classifier predict the target class; report its "
                       "success on held-out images and placements, digitally and after the print-and-photo "
                       "simulation, against a random patch of the same size.")
    q.add_argument("--model", default=None, help=MODEL_SPEC_HELP + " (default: the data set's)")
    add_model_spec_args(q)
    q.add_argument("--target", default="0", help="target class, by name or index (default: %(default)s)")
    q.add_argument("--sizes", type=number_list, default=[0.05, 0.1, 0.15, 0.2],
                   help="patch sizes as shares of the image area (default: 0.05,0.1,0.15,0.2)")
    q.add_argument("--steps", type=positive_int, default=300, help="optimization steps per patch (default: "
                   "%(default)s)")
    q.add_argument("--lr", type=positive_float(), default=0.05,
                   help="Adam learning rate on the patch (default: %(default)s)")
    q.add_argument("--n-train", type=positive_int, default=1000, help="training images (from the train split)")
    q.add_argument("--n-test", type=positive_int, default=500, help="held-out test images (default: %(default)s)")
    q.add_argument("--draws", type=positive_int, default=5, help="random placements per test image")
    q.add_argument("--batch-size", type=positive_int, default=None, help="images per pass when the patch is "
                   "evaluated (default: 500, or fewer when the device's memory holds fewer; training keeps the "
                   "patch's own batch). A batch that runs out of memory is retried at half the size, also when "
                   "given; the size used is reported")
    q.add_argument("--seed", type=seed_int, default=0, help="seed (default: %(default)s)")
    q.add_argument("--random-subset", action="store_true", help="take the train and test images by a fixed random "
                   "permutation (--seed) instead of the first ones (a CIFAR-10 image folder is sorted by class)")
    add_data_args(q)
    add_run_args(q, run_patch)


def run_physical(args: argparse.Namespace) -> int:
    device = device_from(args)
    attacks = [a.strip() for a in args.attack.split(",") if a.strip()]
    bad = [a for a in attacks if a not in PHYSICAL_ATTACKS]
    if not attacks or bad:
        raise AdvlabError(f"unknown attack {', '.join(bad) or args.attack!r}; choose from "
                          f"{', '.join(PHYSICAL_ATTACKS)}")
    eps_values = args.eps or ([0.1, 0.2, 0.3] if args.dataset == "mnist" else [4 / 255, 8 / 255, 16 / 255])
    if max(eps_values) > 1:
        raise AdvlabError(f"Linf eps must lie in (0, 1] (pixel scale; write 8/255), got {max(eps_values):g}")
    data = pick(dataset_split(args, "test"), args.n, args.random_subset, args.seed)
    spec = args.model or default_config(args.dataset).model
    model, meta = resolve_model(spec, args, device)
    check_model_fits(meta, data, spec)
    x, y = (t.to(device) for t in data[:])
    config = {"model": spec, "dataset": args.dataset, "attacks": attacks, "eps": eps_values, "steps": args.steps,
              "samples": args.samples, "n": len(x), "seed": args.seed, "random_subset": args.random_subset,
              "eot_transforms": PrintPhotoTransforms().to_dict(), "simulation": PrintPhotoSimulation().to_dict()}
    batch = run_batch_size(args, lambda: gradient_batch_size(model, data.shape, device, cpu_default=100), device)
    with RunDir(args.out, "physical", config, overwrite=args.overwrite) as run_dir:
        rows, _ = destruction_table(model, x, y, attacks, eps_values, args.steps, args.samples, args.seed,
                                    batch, args.progress)
        record_batch_size(run_dir, batch)
        destruction_section(run_dir, rows, f"{spec} on {args.dataset}", args.steps, args.samples, len(x))
        run_dir.metrics["physical"] = rows
        out = run_dir.commit()
    print("\n".join(destruction_lines(rows)))
    print(f"report: {out / 'report.html'}")
    return 0


def run_patch(args: argparse.Namespace) -> int:
    device = device_from(args)
    if max(args.sizes) > 1:
        raise AdvlabError(f"patch sizes are shares of the image area in (0, 1], got {max(args.sizes):g}")
    test = pick(dataset_split(args, "test"), args.n_test, args.random_subset, args.seed)
    train = pick(dataset_split(args, "train"), args.n_train, args.random_subset, args.seed)
    target = test.class_index(args.target)
    spec = args.model or default_config(args.dataset).model
    model, meta = resolve_model(spec, args, device)
    check_model_fits(meta, test, spec)
    train_x, train_y = (t.to(device) for t in train[:])
    test_x, test_y = (t.to(device) for t in test[:])
    config = {"model": spec, "dataset": args.dataset, "target": target, "sizes": args.sizes, "steps": args.steps,
              "lr": args.lr,
              "n_train": len(train_x), "n_test": len(test_x), "draws": args.draws, "seed": args.seed}
    batch = run_batch_size(args, lambda: gradient_batch_size(model, test.shape, device, cpu_default=500), device)
    with RunDir(args.out, "patch", config, overwrite=args.overwrite) as run_dir:
        rows, patches = patch_sweep(model, train_x, train_y, test_x, test_y, target, args.sizes, args.steps,
                                    args.draws, args.seed, args.progress, args.lr, batch)
        record_batch_size(run_dir, batch)
        patch_section(run_dir, model, rows, patches, test_x, test_y, target, test.classes[target],
                      f"{spec} on {args.dataset}", args.steps)
        run_dir.metrics["patch"] = rows
        out = run_dir.commit()
    print("\n".join(patch_lines(rows)))
    print(f"report: {out / 'report.html'}")
    return 0
