"""advlab physical / advlab patch: adversarial examples that survive a print-and-photo simulation
(Kurakin et al. 2016's destruction rate; Athalye et al. 2018's EOT) and a universal printable patch."""

from __future__ import annotations

import argparse
from fractions import Fraction

import torch
from tqdm.auto import tqdm

from advlab.attacks import BIM, FGSM, PGD
from advlab.attacks.physical import (
    EOTPGD,
    PrintPhotoSimulation,
    PrintPhotoTransforms,
    UniversalPatch,
    measure_destruction,
    patch_success_rate,
    place_patch,
)
from advlab.attacks.physical.patch import sample_placements
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
    positive_float,
    positive_int,
    resolve_model,
    seed_int,
)
from advlab.errors import AdvlabError
from advlab.report.physical_figures import destruction_rate_figure, patch_figure, patch_size_figure
from advlab.report.run import RunDir

DEMO_ORDER = 80
ATTACKS = ("fgsm", "pgd", "eot", "bim")
DEFAULT_ATTACKS = ("fgsm", "pgd", "eot")
# Kurakin, Goodfellow and Bengio 2016, table (photos of printouts, Inception v3, top-1, average case).
KURAKIN_PHOTO = {"Kurakin fast eps 8/255": 0.333, "Kurakin iterative eps 8/255": 0.521}


def number_list(text: str) -> list[float]:
    """Comma-separated numbers in (0, 1] (Linf budgets, shares of the image area), each possibly a
    fraction such as 8/255."""
    try:
        values = [float(Fraction(v.strip())) for v in text.split(",") if v.strip()]
    except (ValueError, ZeroDivisionError, OverflowError):  # 1e400 overflows float(Fraction)
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers in (0, 1] such as 0.1,8/255, "
                                         f"got {text!r}") from None
    if not values or any(not 0 < v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected numbers in (0, 1] (pixel values and image shares), got {text!r}")
    return values


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
    p.add_argument("--batch-size", type=positive_int, default=100, help="images per attack batch")
    p.add_argument("--random-subset", action="store_true", help="take the N test images by a fixed random "
                   "permutation (--seed) instead of the first N (a CIFAR-10 image folder is sorted by class)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the attacks and the simulation (default: 0)")
    add_data_args(p)
    add_device_arg(p)
    add_out_arg(p)
    add_progress_arg(p)
    p.set_defaults(func=run_physical)

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
    q.add_argument("--seed", type=seed_int, default=0, help="seed (default: %(default)s)")
    q.add_argument("--random-subset", action="store_true", help="take the train and test images by a fixed random "
                   "permutation (--seed) instead of the first ones (a CIFAR-10 image folder is sorted by class)")
    add_data_args(q)
    add_device_arg(q)
    add_out_arg(q)
    add_progress_arg(q)
    q.set_defaults(func=run_patch)


def pick(data, n: int, random_subset: bool, seed: int):
    """The first n images, or n drawn by a fixed permutation (folders sorted by class need it)."""
    if not random_subset:
        return data.head(n)
    return data.subset(torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n])


def default_model(dataset: str) -> str:
    return "mnist_cnn" if dataset == "mnist" else "cifar_cnn"


def make_attack(name: str, eps: float, steps: int, samples: int, seed: int):
    if name == "fgsm":
        return FGSM(eps=eps)
    if name == "pgd":
        return PGD(eps=eps, steps=steps, seed=seed)
    if name == "bim":  # Kurakin et al.'s own iterative method: steps of 1/255, min(eps + 4, 1.25 eps) of them
        return BIM(eps=eps)
    if name == "eot":
        return EOTPGD(eps=eps, steps=steps, samples=samples, transforms=PrintPhotoTransforms(), seed=seed)
    raise AdvlabError(f"unknown attack {name!r}; choose from {', '.join(ATTACKS)}")


def destruction_table(model, x, y, attacks: list[str], eps_values: list[float], steps: int, samples: int,
                      seed: int, batch_size: int = 100, progress: bool = True) -> tuple[list[dict], dict]:
    """For each eps and attack: the adversarial batch and its destruction by PrintPhotoSimulation."""
    simulation = PrintPhotoSimulation()
    rows, examples = [], {}
    jobs = [(eps, name) for eps in eps_values for name in attacks]
    for eps, name in tqdm(jobs, desc="physical", disable=not progress, leave=False):
        attack = make_attack(name, eps, steps, samples, seed)
        adv = torch.cat([attack(model, x[i:i + batch_size], y[i:i + batch_size]).adv
                         for i in range(0, len(x), batch_size)])
        stats = measure_destruction(model, x, y, adv, lambda images: simulation(images, seed=seed))
        rows.append({"attack": name, "eps": eps, **stats,
                     "survives_photo": 1.0 - stats["photo_adv_accuracy"]})
        examples[(name, eps)] = adv
    return rows, examples


def destruction_section(run_dir: RunDir, rows: list[dict], label: str, steps: int, samples: int, n: int) -> None:
    columns = ["attack", "eps", "digital success", "qualifying", "destroyed", "destruction rate",
               "accuracy after photo"]
    table = [[r["attack"], round(r["eps"], 4), 1 - r["adv_accuracy"], r["qualifying"], r["destroyed"],
              r["destruction_rate"], r["photo_adv_accuracy"]] for r in rows]
    fig = destruction_rate_figure(rows, run_dir.figure_path("destruction_rates.png"),
                                  f"{label}: destroyed by the print-and-photo simulation", KURAKIN_PHOTO)
    clean = rows[0]
    run_dir.add_section(
        "Physical world: destruction rates",
        f"{label}: FGSM, PGD ({steps} steps) and EOT-PGD ({steps} steps x {samples} sampled print-and-photo "
        f"transformations) on {n} test images; each result passes through a "
        "print-and-photo simulation none of them optimized (real JPEG, bicubic rotation, crop and resample, gamma, "
        "colour gain, sensor noise). Destruction rate (Kurakin et al. 2016): among images classified correctly "
        "when clean and misclassified when attacked, the share the simulation turns back to correct. Clean "
        f"accuracy {clean['clean_accuracy']:.3f}, after the simulation {clean['photo_clean_accuracy']:.3f}. Grey "
        "lines: Kurakin et al.'s rates for photographed printouts (Inception v3, eps 8/255).",
        table={"columns": columns, "rows": table},
        figures=[(fig.name, "destruction rate per attack and eps")], key="physical")


def run_physical(args: argparse.Namespace) -> int:
    device = device_from(args)
    attacks = [a.strip() for a in args.attack.split(",") if a.strip()]
    bad = [a for a in attacks if a not in ATTACKS]
    if not attacks or bad:
        raise AdvlabError(f"unknown attack {', '.join(bad) or args.attack!r}; choose from {', '.join(ATTACKS)}")
    eps_values = args.eps or ([0.1, 0.2, 0.3] if args.dataset == "mnist" else [4 / 255, 8 / 255, 16 / 255])
    if max(eps_values) > 1:
        raise AdvlabError(f"Linf eps must lie in (0, 1] (pixel scale; write 8/255), got {max(eps_values):g}")
    data = pick(dataset_split(args, "test"), args.n, args.random_subset, args.seed)
    spec = args.model or default_model(args.dataset)
    model, meta = resolve_model(spec, args, device)
    check_model_fits(meta, data, spec)
    x, y = (t.to(device) for t in data[:])
    config = {"model": spec, "dataset": args.dataset, "attacks": attacks, "eps": eps_values, "steps": args.steps,
              "samples": args.samples, "n": len(x), "seed": args.seed, "random_subset": args.random_subset,
              "eot_transforms": PrintPhotoTransforms().to_dict(), "simulation": PrintPhotoSimulation().to_dict()}
    with RunDir(args.out, "physical", config, overwrite=args.overwrite) as run_dir:
        rows, _ = destruction_table(model, x, y, attacks, eps_values, args.steps, args.samples, args.seed,
                                    args.batch_size, args.progress)
        destruction_section(run_dir, rows, f"{spec} on {args.dataset}", args.steps, args.samples, len(x))
        run_dir.metrics["physical"] = rows
        out = run_dir.commit()
    for r in rows:
        print(f"{r['attack']:5s} eps {r['eps']:.4g}: digital success {1 - r['adv_accuracy']:.3f}, destruction rate "
              f"{r['destruction_rate']:.3f} ({r['destroyed']}/{r['qualifying']}), misclassified after photo "
              f"{r['survives_photo']:.3f}")
    print(f"report: {out / 'report.html'}")
    return 0


def patch_sweep(model, train_x, train_y, test_x, test_y, target: int, sizes: list[float], steps: int, draws: int,
                seed: int, progress: bool = True, lr: float = 0.05) -> tuple[list[dict], dict]:
    """Train a patch per size; success on held-out images, digital and through the photo simulation."""
    simulation = PrintPhotoSimulation()
    rows, patches = [], {}
    for size in sizes:
        trainer = UniversalPatch(target, size=size, steps=steps, lr=lr, seed=seed)
        patch = trainer.fit(model, train_x, train_y, progress=progress)
        digital = patch_success_rate(model, patch, test_x, test_y, target, draws=draws, seed=seed + 1)
        photo = patch_success_rate(model, patch, test_x, test_y, target, draws=draws, photo=simulation,
                                   seed=seed + 1)
        rows.append({"size": size, "side": patch.shape[-1], **digital, "photo_success_rate": photo["success_rate"],
                     "photo_random_patch_rate": photo["random_patch_rate"], "final_loss": trainer.history[-1],
                     "cost": trainer.cost.to_dict()})
        patches[size] = patch
    return rows, patches


def patch_section(run_dir: RunDir, model, rows, patches, test_x, test_y, target: int, target_name: str,
                  label: str, steps: int) -> None:
    largest = max(patches)
    keep = test_y != target
    x = test_x[keep][:8]
    placement = sample_placements(len(x), x.shape[2], x.shape[3], patches[largest].shape[-1],
                                  generator=torch.Generator().manual_seed(99))
    with torch.no_grad():
        patched, _ = place_patch(x, patches[largest], placement)
        photo = PrintPhotoSimulation()(patched, seed=99)
        preds = model(photo).argmax(1).tolist()
    fig = patch_figure(patches, photo, [f"pred {p}" for p in preds], run_dir.figure_path("patch.png"),
                       f"patches toward '{target_name}'; below: the {largest:.0%} patch, photographed")
    curve = patch_size_figure(rows, run_dir.figure_path("patch_size.png"), f"'{target_name}'")
    table = [[r["size"], r["side"], r["success_rate"], r["photo_success_rate"], r["random_patch_rate"]]
             for r in rows]
    run_dir.add_section(
        "Physical world: universal patch",
        f"{label}: one patch per size, trained for {steps} Adam steps on training images at random positions, "
        "scales (0.8-1.2) and rotations (+-20 degrees) under sampled print-and-photo transformations, toward "
        f"class '{target_name}'. Success: share of held-out test images (not of the target class) x fresh "
        "placements predicted as the target, digitally and after the separate print-and-photo simulation; a "
        "random patch of the same size is the baseline.",
        table={"columns": ["size (area share)", "side (px)", "success", "success after photo", "random patch"],
               "rows": table},
        figures=[(fig.name, "the patches and photographed examples"), (curve.name, "success against patch size")],
        key="patch")


def run_patch(args: argparse.Namespace) -> int:
    device = device_from(args)
    if max(args.sizes) > 1:
        raise AdvlabError(f"patch sizes are shares of the image area in (0, 1], got {max(args.sizes):g}")
    test = pick(dataset_split(args, "test"), args.n_test, args.random_subset, args.seed)
    train = pick(dataset_split(args, "train"), args.n_train, args.random_subset, args.seed)
    target = test.class_index(args.target)
    spec = args.model or default_model(args.dataset)
    model, meta = resolve_model(spec, args, device)
    check_model_fits(meta, test, spec)
    train_x, train_y = (t.to(device) for t in train[:])
    test_x, test_y = (t.to(device) for t in test[:])
    config = {"model": spec, "dataset": args.dataset, "target": target, "sizes": args.sizes, "steps": args.steps,
              "lr": args.lr,
              "n_train": len(train_x), "n_test": len(test_x), "draws": args.draws, "seed": args.seed}
    with RunDir(args.out, "patch", config, overwrite=args.overwrite) as run_dir:
        rows, patches = patch_sweep(model, train_x, train_y, test_x, test_y, target, args.sizes, args.steps,
                                    args.draws, args.seed, args.progress, args.lr)
        patch_section(run_dir, model, rows, patches, test_x, test_y, target, test.classes[target],
                      f"{spec} on {args.dataset}", args.steps)
        run_dir.metrics["patch"] = rows
        out = run_dir.commit()
    for r in rows:
        print(f"patch {r['size']:.0%} ({r['side']} px): success {r['success_rate']:.3f}, after photo "
              f"{r['photo_success_rate']:.3f}, random patch {r['random_patch_rate']:.3f}")
    print(f"report: {out / 'report.html'}")
    return 0


def demo_section(ctx) -> None:
    """Destruction rates of FGSM, PGD and EOT at one eps, and one small patch, on the demo model."""
    n, steps, samples, patch_steps, n_train = (8, 3, 2, 5, 64) if ctx.quick else (32, 8, 4, 40, 300)
    x, y = (t.to(ctx.device) for t in ctx.test_data.head(n)[:])
    rows, _ = destruction_table(ctx.model, x, y, list(DEFAULT_ATTACKS), [0.2], steps, samples, 0, progress=ctx.progress)
    destruction_section(ctx.run, rows, "demo model on MNIST", steps, samples, n)
    tx, ty = (t.to(ctx.device) for t in ctx.train_data.head(n_train)[:])
    hx, hy = (t.to(ctx.device) for t in ctx.test_data.subset(slice(n, n + (16 if ctx.quick else 100)))[:])
    prow, patches = patch_sweep(ctx.model, tx, ty, hx, hy, 3, [0.25], patch_steps, 2, 0, ctx.progress, lr=0.1)
    patch_section(ctx.run, ctx.model, prow, patches, hx, hy, 3, ctx.test_data.classes[3], "demo model on MNIST",
                  patch_steps)
    ctx.run.metrics["physical"] = {"destruction": rows, "patch": prow}
