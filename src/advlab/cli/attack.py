"""advlab attack: run a white-box attack on a classifier over test images and report what it achieved.

    advlab attack --model mnist_cnn --dataset mnist --attack pgd --eps 0.3 [--norm l2]
                  [--targeted [--target-class CLASS]] [--n 1000] [--json OUT]

The run folder holds the metrics (success, robust accuracy, median norms, cost), the lecture's
triptych for a few samples and, for minimal-perturbation attacks, the accuracy-versus-eps curve.
"""

from __future__ import annotations

import argparse
import json
import math

import torch
from tqdm import tqdm

from advlab.attacks import MINIMAL_NORM_ATTACKS, WHITEBOX_ATTACKS, FoolingImages, build_attack
from advlab.attacks.base import NORMS, Cost
from advlab.attacks.blackbox import BLACKBOX_ATTACKS
from advlab.cli.blackbox import run_oracle_attack
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
    nonnegative_float,
    positive_float,
    positive_int,
    probability,
    resolve_model,
    seed_int,
    speed_up,
)
from advlab.errors import AdvlabError
from advlab.evaluation.robust import MinimalNormEvaluation, robust_accuracy
from advlab.report.attack_figures import fooling_grid_figure, robust_curve_figure, triptych_figure
from advlab.report.run import RunDir
from advlab.runtime import atomic_write, autocast, gradient_batch_size

DEMO_ORDER = 20


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("attack", help="attack a classifier: white-box (FGSM ... C&W) or black-box through --oracle",
                       description="Attack a classifier on test images and write a run folder with metrics, "
                       "figures and a report section. White-box attacks need --model; the black-box attacks "
                       f"({', '.join(BLACKBOX_ATTACKS)}) query --oracle URL (an `advlab serve` API) or an "
                       "in-process oracle of --model, and see only its outputs.")
    p.add_argument("--model", default=None, help=MODEL_SPEC_HELP)
    add_model_spec_args(p)
    add_data_args(p)
    p.add_argument("--attack", default="pgd", choices=(*WHITEBOX_ATTACKS, *BLACKBOX_ATTACKS),
                   help="attack (default: %(default)s)")
    p.add_argument("--oracle", default=None, help="URL of a prediction API (`advlab serve`) to attack black-box")
    p.add_argument("--token", default=None, help="bearer token for --oracle")
    p.add_argument("--budget", type=positive_int, default=None, help="total oracle queries allowed (black-box)")
    p.add_argument("--queries", type=positive_int, default=None, help="queries per image (black-box)")
    p.add_argument("--p-init", type=probability, default=None, help="Square Attack's initial patch fraction")
    p.add_argument("--labels-only", action="store_true", default=None, help="the oracle returns labels only")
    p.add_argument("--eps", type=nonnegative_float(), default=0.3, help="perturbation bound (ignored by the minimal-"
                   "perturbation attacks deepfool, cw, lbfgs, fab, fab-t) (default: %(default)s)")
    p.add_argument("--norm", default=None, choices=NORMS, help="threat model (default: linf; l2 for cw and lbfgs)")
    p.add_argument("--steps", type=positive_int, default=None, help="iterations (default: the attack's own)")
    p.add_argument("--step-size", type=positive_float(), default=None,
                   help="PGD/BIM/MI-FGSM step (default: the attack's own)")
    p.add_argument("--restarts", type=positive_int, default=1, help="PGD/APGD/FAB restarts (default: 1)")
    p.add_argument("--loss", default="ce", choices=("ce", "cw"), help="PGD/FGSM loss (default: ce)")
    p.add_argument("--targeted", action="store_true", help="aim at a class instead of any wrong one")
    p.add_argument("--target-class", default=None, help="class index or name for --targeted (default: a random "
                   "class other than the true one, per image)")
    p.add_argument("--n", type=positive_int, default=1000, help="attack the first N test images (default: 1000)")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="images per batch (default: 250 on a CPU; on a GPU the largest that fits)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed for random starts and targets (default: 0)")
    p.add_argument("--json", default=None, help="also write the metrics as JSON to this file (must not exist yet "
                   "unless --overwrite)")
    declare_output_file(p, "json")
    add_device_arg(p)
    add_speed_args(p)
    add_out_arg(p)
    add_progress_arg(p)
    p.set_defaults(func=run)


def _target_class(spec: str, classes: list[str]) -> int:
    if spec in classes:
        return classes.index(spec)
    try:
        k = int(spec)
    except ValueError:
        raise AdvlabError(f"unknown target class {spec!r}; choose an index 0..{len(classes) - 1} or one of "
                          f"{', '.join(classes)}") from None
    if not 0 <= k < len(classes):
        raise AdvlabError(f"target class {k} out of range 0..{len(classes) - 1}")
    return k


def _attack_from_args(args) -> object:
    norm = args.norm or ("l2" if args.attack in ("cw", "lbfgs") else "linf")
    kwargs = {}
    if args.attack == "pgd":
        kwargs.update(restarts=args.restarts, loss=args.loss, seed=args.seed)
    elif args.attack.startswith(("apgd", "fab")):
        kwargs.update(restarts=args.restarts, seed=args.seed)
    if args.attack.startswith("apgd"):
        kwargs.update(eps=args.eps)
    elif args.attack in ("fgsm", "bim", "mifgsm"):
        kwargs.update(loss=args.loss)
    if args.attack in ("fgsm", "pgd", "bim", "mifgsm"):
        kwargs.update(eps=args.eps)
    if args.attack in ("pgd", "bim", "mifgsm"):
        kwargs.update(step_size=args.step_size)
    if args.attack in ("pgd", "bim", "mifgsm", "deepfool", "cw", "apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t"):
        kwargs.update(steps=args.steps)
    return build_attack(args.attack, norm=norm, **kwargs), norm


def attack_dataset(attack, model, x, y, target, batch_size, device, progress=True):
    """Attack (x, y) in batches; returns per-sample tensors and the summed cost."""
    keys = ("success", "clean_pred", "adv_pred")
    out: dict[str, list] = {k: [] for k in (*keys, "l0", "l2", "linf", "adv")}
    cost = Cost()
    for start in tqdm(range(0, len(x), batch_size), desc=attack.name, disable=not progress, leave=False):
        s = slice(start, start + batch_size)
        result = attack(model, x[s].to(device), y[s].to(device), None if target is None else target[s].to(device))
        for k in keys:
            out[k].append(getattr(result, k).cpu())
        for k in ("l0", "l2", "linf"):
            out[k].append(result.norms[k].cpu())
        out["adv"].append(result.adv.cpu())
        cost.forward += result.cost.forward
        cost.backward += result.cost.backward
    return {k: torch.cat(v) for k, v in out.items()}, cost


def _summary(res, y, target, cost, norm) -> dict:
    ok = res["success"]
    clean = res["clean_pred"] == y
    n = len(y)
    medians = {k: (float(res[k][ok & clean].median()) if (ok & clean).any() else float("nan"))
               for k in ("l0", "l2", "linf")}
    return {"n": n, "clean_accuracy": clean.float().mean().item(),
            "robust_accuracy": (res["adv_pred"] == y).float().mean().item(),
            "success_rate": ok.float().mean().item(),
            "success_rate_on_correct": (ok & clean).float().sum().item() / max(int(clean.sum()), 1),
            "median_norms_of_successes_on_correct": medians, "norm": norm, "targeted": target is not None,
            "cost": cost.to_dict(), "gradient_passes_per_image": cost.backward / max(n, 1)}


def run(args: argparse.Namespace) -> int:
    if args.oracle or args.attack in BLACKBOX_ATTACKS:
        if args.attack not in BLACKBOX_ATTACKS:
            choices = ", ".join(BLACKBOX_ATTACKS)
            raise AdvlabError(f"--oracle gives only black-box access; choose --attack from {choices}")
        if args.targeted:
            raise AdvlabError("targeted black-box attacks are not offered by `advlab attack`; drop --targeted")
        if args.norm is None:
            args.norm = "linf"
        if args.batch_size is None:
            args.batch_size = 250  # the black-box batch stays what it was; the GPU sizing is for white-box passes
        return run_oracle_attack(args)
    if args.model is None:
        raise AdvlabError("white-box attacks need --model (a checkpoint or an architecture name)")
    device = device_from(args)
    attack, norm = _attack_from_args(args)
    data = dataset_split(args, "test", args.n)
    model, meta = resolve_model(args.model, args, device)
    check_model_fits(meta, data, args.model)
    model = speed_up(model.eval(), args)
    if args.batch_size is None:
        args.batch_size = gradient_batch_size(model, data.shape, device, cpu_default=250)
    x, y = data.tensors(len(data))
    target = None
    if args.targeted:
        gen = torch.Generator().manual_seed(args.seed)
        if args.target_class is not None:
            k = _target_class(args.target_class, list(data.classes))
            keep = y != k  # an image already of the target class has nothing to reach
            x, y = x[keep], y[keep]
            target = torch.full_like(y, k)
        else:
            shift = torch.randint(1, data.num_classes, (len(y),), generator=gen)
            target = (y + shift) % data.num_classes
    elif args.target_class is not None:
        raise AdvlabError("--target-class needs --targeted")
    config = {"model": args.model, "dataset": args.dataset, "attack": args.attack, "eps": args.eps, "norm": norm,
              "steps": args.steps, "step_size": args.step_size, "targeted": args.targeted,
              "target_class": args.target_class, "n": len(y), "seed": args.seed, "precision": args.precision}
    torch.manual_seed(args.seed)
    with RunDir(args.out, "attack", config, overwrite=args.overwrite) as run_dir:
        with autocast(device, args.precision):
            res, cost = attack_dataset(attack, model, x, y, target, args.batch_size, device, args.progress)
        summary = _summary(res, y, target, cost, norm)
        run_dir.metrics["attack"] = summary
        add_attack_section(run_dir, model, data.classes, x, y, res, summary, args.attack, attack, norm, device)
        out = run_dir.commit()
    if args.json:
        atomic_write(args.json, lambda p: p.write_text(json.dumps({"config": config, **summary}, indent=2) + "\n"))
    med = summary["median_norms_of_successes_on_correct"][norm]
    print(f"{args.attack}: success {summary['success_rate']:.4f}, robust accuracy {summary['robust_accuracy']:.4f} "
          f"(clean {summary['clean_accuracy']:.4f}), median {norm} of successes {med:.4f}, "
          f"{summary['gradient_passes_per_image']:.1f} gradient passes per image\nreport: {out / 'report.html'}")
    return 0


def add_attack_section(run_dir, model, classes, x, y, res, summary, name, attack, norm, device) -> None:
    ok = (res["success"] & (res["clean_pred"] == y)).nonzero().squeeze(1)[:4]
    figures = []
    if len(ok):
        fig = triptych_figure(model, x[ok].to(device), res["adv"][ok].to(device),
                              run_dir.figure_path(f"{name}_triptych.png"), classes,
                              f"{name}: clean, perturbation, adversarial")
        figures.append((fig.name, "clean (label, confidence), perturbation magnified, adversarial"))
    if name in MINIMAL_NORM_ATTACKS:
        norms = res[norm].clone()
        norms[~res["success"]] = math.inf
        norms[res["clean_pred"] != y] = 0.0
        ev = MinimalNormEvaluation(norms, norm, summary["clean_accuracy"], summary["success_rate"], Cost())
        grid, acc = ev.curve()
        fig = robust_curve_figure({name: (grid, acc)}, run_dir.figure_path(f"{name}_curve.png"), norm,
                                  f"accuracy vs {norm} eps from {name}'s minimal norms", {name: ev.median})
        figures.append((fig.name, "robust accuracy implied by the per-sample minimal norms"))
        summary["median_minimal_norm"] = ev.median
    eps_text = "" if name in MINIMAL_NORM_ATTACKS else f" at {norm} eps {attack.eps:g}"
    med = summary["median_norms_of_successes_on_correct"][norm]
    table = {"columns": ["metric", "value"],
             "rows": [["images", summary["n"]], ["clean accuracy", summary["clean_accuracy"]],
                      ["robust accuracy", summary["robust_accuracy"]], ["success rate", summary["success_rate"]],
                      [f"median {norm} of successes", med],
                      ["gradient passes per image", summary["gradient_passes_per_image"]]]}
    run_dir.add_section(f"White-box attack: {name}", f"{name}{eps_text}"
                        f"{' (targeted)' if summary['targeted'] else ''} on {summary['n']} images: robust accuracy "
                        f"{summary['robust_accuracy']:.4f} (clean {summary['clean_accuracy']:.4f}). Success is "
                        "measured by a fresh forward pass on the returned images.", table=table, figures=figures,
                        key=f"attack_{name}")


def demo_section(ctx) -> None:
    """FGSM/PGD triptych, robust accuracy vs eps (FGSM, PGD, DeepFool from minimal norms), fooling grid."""
    from advlab.attacks import FAB, FGSM, PGD, DeepFool
    from advlab.evaluation.robust import minimal_norms

    n_curve, steps = (8, 3) if ctx.quick else (100, 20)
    x, y = ctx.test_data.tensors(n_curve)
    x, y = x.to(ctx.device), y.to(ctx.device)
    model, classes = ctx.model, ctx.test_data.classes
    fgsm = FGSM(eps=0.2)(model, x[:8], y[:8])
    pgd = PGD(eps=0.2, steps=steps, seed=0)(model, x[:8], y[:8])
    picks = (fgsm.success & pgd.success & fgsm.clean_correct).nonzero().squeeze(1)[:2]
    if len(picks) == 0:
        picks = torch.arange(2, device=x.device)
    rows_x = torch.cat([x[:8][picks], x[:8][picks]])
    rows_adv = torch.cat([fgsm.adv[picks], pgd.adv[picks]])
    tri = triptych_figure(model, rows_x, rows_adv, ctx.run.figure_path("attack_triptych.png"), classes,
                          "FGSM (top rows) and PGD (bottom rows), Linf eps 0.2")
    eps = [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]
    ev = robust_accuracy(model, x, y, {"FGSM": lambda e: FGSM(eps=e),
                                       f"PGD-{steps}": lambda e: PGD(eps=e, steps=steps, seed=0, early_stop=True)},
                         eps, batch_size=n_curve, device=ctx.device, progress=False)
    df = minimal_norms(model, x, y, DeepFool(norm="linf", steps=10 if ctx.quick else 50, box_aware=3), norm="linf",
                       batch_size=n_curve, device=ctx.device, progress=False)
    fab = minimal_norms(model, x, y, FAB(norm="linf", steps=3 if ctx.quick else 20), norm="linf",
                        batch_size=n_curve, device=ctx.device, progress=False)
    curves = {k: (eps, v) for k, v in ev.accuracy.items()}
    grid = [e / 100 for e in range(0, 31)]
    curves["DeepFool (minimal Linf)"] = (grid, df.accuracy_at(grid))
    curves["FAB (minimal Linf)"] = (grid, fab.accuracy_at(grid))
    curve = robust_curve_figure(curves, ctx.run.figure_path("attack_curve.png"), "linf",
                                f"robust accuracy vs Linf eps ({n_curve} test images)")
    fool_steps = 1 if ctx.quick else 5
    fool = FoolingImages(eps=0.25, steps=fool_steps)(model, tuple(ctx.test_data.shape),
                                                                ctx.test_data.num_classes, 2 if ctx.quick else 6,
                                                                device=ctx.device)
    grid_fig = fooling_grid_figure(fool.images, fool.target, fool.confidence, fool.predicted,
                                   ctx.run.figure_path("attack_fooling.png"), classes,
                                   title="fooling images: Gaussian noise pushed toward each class (row)")
    acc = dict(zip(eps, ev.accuracy[f"PGD-{steps}"], strict=True))
    ctx.run.add_section(
        "White-box attacks",
        f"FGSM (Goodfellow et al. 2015) and PGD (Madry et al. 2018) on {n_curve} test images: PGD-{steps} robust "
        f"accuracy {acc[0.1]:.2f} at Linf eps 0.1 and {acc[0.3]:.2f} at 0.3 (clean {ev.clean_accuracy:.2f}); "
        f"DeepFool's median minimal Linf perturbation is {df.median:.3f}, FAB's (Croce & Hein 2020b) "
        f"{fab.median:.3f}. Fooling images: {fool.share:.0%} of "
        f"Gaussian-noise images pushed by {fool_steps} signed-gradient step(s) (Linf 0.25 in all) toward a class "
        "are given that class with more than 50% confidence (Goodfellow et al.: 93.4% on CIFAR-10).",
        table={"columns": ["eps", *ev.accuracy.keys()],
               "rows": [[e, *[ev.accuracy[k][i] for k in ev.accuracy]] for i, e in enumerate(eps)]},
        figures=[(tri.name, "clean (label, confidence), perturbation magnified, adversarial"),
                 (curve.name, "robust accuracy against Linf eps, one curve per attack"),
                 (grid_fig.name, "fooling images, one row per target class, titled with the model's answer")],
        key="whitebox")
    ctx.run.metrics["whitebox"] = {"robust_accuracy": ev.to_dict(), "deepfool_linf": df.to_dict(),
                                   "fab_linf": fab.to_dict(),
                                   "fooling": fool.summary()}
