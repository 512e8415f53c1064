"""advlab attack: run a white-box attack on a classifier over test images and report what it achieved.

    advlab attack --model mnist_cnn --dataset mnist --attack pgd --eps 0.3 [--norm l2]
                  [--targeted [--target-class CLASS]] [--n 1000] [--json OUT]

The run folder holds the metrics (AttackResult.summary of advlab.evaluation.attack_dataset), the
lecture's triptych for a few samples and, for minimal-perturbation attacks, the accuracy-versus-eps
curve. With --oracle (or a black-box --attack) it is `advlab blackbox` with one attack.
"""

from __future__ import annotations

import argparse
import json

import torch

from advlab.attacks import WHITEBOX_ATTACKS, Attack, build_attack
from advlab.attacks.base import NORMS
from advlab.attacks.blackbox import BLACKBOX_ATTACKS
from advlab.cli.common import (
    MODEL_SPEC_HELP,
    add_blackbox_args,
    add_data_args,
    add_device_arg,
    add_model_spec_args,
    add_oracle_args,
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
    record_batch_size,
    resolve_model,
    run_batch_size,
    run_oracle_attack,
    seed_int,
    speed_up,
)
from advlab.errors import AdvlabError
from advlab.evaluation.attack_run import attack_dataset, choose_targets
from advlab.report.run import RunDir
from advlab.report.sections import add_attack_section
from advlab.runtime import atomic_write, autocast, gradient_batch_size

WHITEBOX_EPS, WHITEBOX_N = 0.3, 1000  # black-box runs take advlab.evaluation.blackbox.BlackboxSettings' defaults


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("attack", help="attack a classifier: white-box (FGSM ... C&W) or black-box through --oracle",
                       description="Attack a classifier on test images and write a run folder with metrics, "
                       "figures and a report section. White-box attacks need --model; the black-box attacks "
                       f"({', '.join(BLACKBOX_ATTACKS)}) query --oracle URL (an `advlab serve` API) or an "
                       "in-process oracle of --model, and see only its outputs (as `advlab blackbox`).")
    p.add_argument("--model", default=None, help=MODEL_SPEC_HELP)
    add_model_spec_args(p)
    add_data_args(p)
    p.add_argument("--attack", default="pgd", choices=(*WHITEBOX_ATTACKS, *BLACKBOX_ATTACKS),
                   help="attack (default: %(default)s)")
    add_oracle_args(p, model_choice=False)
    add_blackbox_args(p)
    p.add_argument("--eps", type=nonnegative_float(), default=None, help="perturbation bound (ignored by the "
                   "minimal-perturbation attacks deepfool, cw, lbfgs, fab, fab-t) (default: 0.3; black-box L2: 2.0)")
    p.add_argument("--norm", default=None, choices=NORMS, help="threat model (default: linf; l2 for cw and lbfgs)")
    p.add_argument("--steps", type=positive_int, default=None, help="iterations (default: the attack's own)")
    p.add_argument("--step-size", type=positive_float(), default=None,
                   help="PGD/BIM/MI-FGSM step (default: the attack's own)")
    p.add_argument("--restarts", type=positive_int, default=1, help="PGD/APGD/FAB restarts (default: 1)")
    p.add_argument("--loss", default="ce", choices=("ce", "cw"), help="PGD/FGSM loss (default: ce)")
    p.add_argument("--targeted", action="store_true", help="aim at a class instead of any wrong one")
    p.add_argument("--target-class", default=None, help="class index or name for --targeted (default: a random "
                   "class other than the true one, per image)")
    p.add_argument("--n", type=positive_int, default=None,
                   help="attack the first N test images (default: 1000; black-box: 100)")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="images per batch (default: 250 on a CPU, on a GPU the largest that fits; black-box: 100). "
                   "A batch that runs out of memory is retried at half the size, also when given; the size used "
                   "is reported")
    p.add_argument("--seed", type=seed_int, default=0, help="seed for random starts and targets (default: 0)")
    p.add_argument("--json", default=None, help="also write the metrics as JSON to this file (must not exist yet "
                   "unless --overwrite)")
    declare_output_file(p, "json")
    add_device_arg(p)
    add_speed_args(p)
    add_out_arg(p)
    add_progress_arg(p)
    p.set_defaults(func=run)


def _attack_from_args(args: argparse.Namespace) -> tuple[Attack, str]:
    """The white-box attack the flags describe, and its norm; the registry passes each attack only the
    options it takes (advlab.attacks.ATTACKS)."""
    norm = args.norm or ("l2" if args.attack in ("cw", "lbfgs") else "linf")
    eps = WHITEBOX_EPS if args.eps is None else args.eps
    return build_attack(args.attack, eps=eps, norm=norm, steps=args.steps, step_size=args.step_size,
                        restarts=args.restarts, loss=args.loss, seed=args.seed), norm


def run(args: argparse.Namespace) -> int:
    if args.oracle or args.attack in BLACKBOX_ATTACKS:
        if args.attack not in BLACKBOX_ATTACKS:
            choices = ", ".join(BLACKBOX_ATTACKS)
            raise AdvlabError(f"--oracle gives only black-box access; choose --attack from {choices}")
        if args.targeted:
            raise AdvlabError("targeted black-box attacks are not offered by `advlab attack`; drop --targeted")
        return run_oracle_attack(args)
    if args.model is None:
        raise AdvlabError("white-box attacks need --model (a checkpoint or an architecture name)")
    if args.target_class is not None and not args.targeted:
        raise AdvlabError("--target-class needs --targeted")
    device = device_from(args)
    attack, norm = _attack_from_args(args)
    data = dataset_split(args, "test", args.n or WHITEBOX_N)
    model, meta = resolve_model(args.model, args, device)
    check_model_fits(meta, data, args.model)
    model = speed_up(model.eval(), args)
    batch = run_batch_size(args, lambda: gradient_batch_size(model, data.shape, device, cpu_default=250), device)
    x, y = data.tensors(len(data))
    target = None
    if args.targeted:
        x, y, target = choose_targets(x, y, list(data.classes), args.target_class, args.seed)
    eps = WHITEBOX_EPS if args.eps is None else args.eps
    config = {"model": args.model, "dataset": args.dataset, "attack": args.attack, "eps": eps, "norm": norm,
              "steps": args.steps, "step_size": args.step_size, "targeted": args.targeted,
              "target_class": args.target_class, "n": len(y), "seed": args.seed, "precision": args.precision}
    torch.manual_seed(args.seed)
    with RunDir(args.out, "attack", config, overwrite=args.overwrite) as run_dir:
        with autocast(device, args.precision):
            result = attack_dataset(attack, model, x, y, target, batch, device, args.progress)
        summary = {**result.summary(), "norm": norm}
        add_attack_section(run_dir, model, data.classes, x, result, summary, args.attack, getattr(attack, "eps", None),
                           norm, device)
        run_dir.metrics["attack"] = summary
        record_batch_size(run_dir, batch)
        out = run_dir.commit()
    if args.json:
        atomic_write(args.json, lambda p: p.write_text(json.dumps({"config": config, **summary}, indent=2) + "\n"))
    med = summary["median_norms_of_successes_on_correct"][norm]
    print(f"{args.attack}: success {summary['success_rate']:.4f}, robust accuracy {summary['robust_accuracy']:.4f} "
          f"(clean {summary['clean_accuracy']:.4f}), median {norm} of successes {med:.4f}, "
          f"{summary['gradient_passes_per_image']:.1f} gradient passes per image\nreport: {out / 'report.html'}")
    return 0


