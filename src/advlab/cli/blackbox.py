"""advlab blackbox / substitute / transfer: attacks that see only an oracle, and transferability.

``advlab blackbox --oracle http://127.0.0.1:8000 --attack square --eps 0.3 --n 100 --queries 10000``
attacks a model served by ``advlab serve``; ``--model CHECKPOINT_OR_NAME`` attacks an in-process
oracle instead. The work is advlab.evaluation.blackbox (run_blackbox, substitute_attack) and
advlab.evaluation.transfer; the run body of blackbox is shared with ``advlab attack --oracle``.
"""

from __future__ import annotations

import argparse

from advlab.attacks.blackbox import BLACKBOX_ATTACKS, HttpOracle, LocalOracle
from advlab.cli.common import (
    add_blackbox_args,
    add_data_args,
    add_device_arg,
    add_oracle_args,
    add_out_arg,
    add_progress_arg,
    check_model_fits,
    dataset_split,
    device_from,
    make_oracle,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
    run_oracle_attack,
    seed_int,
)
from advlab.evaluation.blackbox import SubstituteSettings, substitute_attack
from advlab.models import validate_metadata
from advlab.report.run import RunDir
from advlab.report.sections import add_substitute_section, add_transfer_section


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("blackbox", help="score- or decision-based attacks through an oracle (HTTP or in-process)",
                       description="Attack a classifier you can only query: Square, NES, ZOO (probabilities) or "
                       "HopSkipJump (labels only). Reports success rate and queries per image on the images the "
                       "oracle classifies correctly, and success against the query budget.")
    add_oracle_args(p)
    p.add_argument("--attack", default="square",
                   help=f"comma-separated black-box attacks: {', '.join(BLACKBOX_ATTACKS)} (default: %(default)s)")
    p.add_argument("--norm", choices=("linf", "l2"), default="linf")
    p.add_argument("--eps", type=nonnegative_float(), default=None,
                   help="perturbation bound (default: 0.3 Linf, 2.0 L2)")
    p.add_argument("--n", type=positive_int, default=None, help="attack the first N test images (default 100)")
    p.add_argument("--batch-size", "--batch", type=positive_int, default=None, dest="batch_size",
                   help="images attacked together (default 100)")
    p.add_argument("--seed", type=seed_int, default=0)
    add_blackbox_args(p)
    add_data_args(p)
    add_device_arg(p)
    add_out_arg(p)
    add_progress_arg(p)
    p.set_defaults(func=run_oracle_attack)

    s = sub.add_parser("substitute", help="Papernot et al. 2017: train a substitute from oracle labels, "
                       "attack it with FGSM, measure transfer to the oracle")
    add_oracle_args(s)
    s.add_argument("--seeds", type=positive_int, default=150, help="held-out seed images (default 150)")
    s.add_argument("--rounds", type=nonnegative_int, default=6, help="Jacobian augmentation rounds (default 6)")
    s.add_argument("--lam", type=positive_float(), default=0.1, help="augmentation step lambda (default 0.1)")
    s.add_argument("--substitute", default="mlp", help="substitute architecture (default: mlp, 200-200)")
    s.add_argument("--epochs", type=positive_int, default=10, help="substitute training epochs per round")
    s.add_argument("--eps", type=nonnegative_float(), default=0.3, help="FGSM eps on the substitute (default 0.3)")
    s.add_argument("--n-eval", type=positive_int, default=1000, help="test images for accuracy / transfer")
    s.add_argument("--tau", type=positive_int, default=None,
                   help="periodic step size: lambda * (-1)^floor(round / tau) (default: constant lambda)")
    s.add_argument("--reservoir-from", type=positive_int, default=None,
                   help="from this round on, augment only --reservoir-size points drawn from the set")
    s.add_argument("--reservoir-size", type=positive_int, default=400, help="reservoir size kappa (default 400)")
    s.add_argument("--optimizer", choices=("adam", "sgd"), default="adam",
                   help="substitute training: adam (lr 1e-3, batch 32) or sgd (the paper's: lr 1e-2, momentum 0.9)")
    s.add_argument("--lr", type=positive_float(), default=None,
                   help="substitute learning rate (default: 1e-3 adam, 1e-2 sgd)")
    s.add_argument("--batch-size", type=positive_int, default=None, help="default: 32 adam, 128 sgd")
    s.add_argument("--jacobian", choices=("probs", "logits"), default="probs",
                   help="augment along the softmax's Jacobian row (the paper) or the logit's")
    s.add_argument("--ensemble", default="",
                   help="comma-separated extra substitute architectures trained on the same labeled set (no "
                   "new queries); the final examples are crafted on the mean of all substitutes' logits")
    s.add_argument("--craft", choices=("fgsm", "pgd", "mifgsm", "mifgsm-di"), default="fgsm",
                   help="attack crafting the final examples: FGSM (the paper), PGD-10 (step 2.5 eps/10), MI-FGSM, "
                   "or MI-FGSM with input diversity (10 steps, decay 1)")
    s.add_argument("--seed", type=seed_int, default=0)
    add_data_args(s)
    add_device_arg(s)
    add_out_arg(s)
    add_progress_arg(s)
    s.set_defaults(func=run_substitute)

    t = sub.add_parser("transfer", help="transferability matrix of models trained on disjoint halves")
    t.add_argument("--models", default="mnist_cnn:A,lenet:A,lenet:B,mlp:B",
                   help="comma-separated ARCH:HALF (HALF A or B of the training set, or 'full') (default: "
                   "%(default)s)")
    t.add_argument("--attack", choices=("fgsm", "pgd"), default="pgd")
    t.add_argument("--eps", type=nonnegative_float(), default=0.3)
    t.add_argument("--steps", type=positive_int, default=40, help="PGD steps (default 40)")
    t.add_argument("--n", type=positive_int, default=500, help="test images (default 500)")
    add_data_args(t)
    add_device_arg(t)
    add_out_arg(t)
    add_progress_arg(t)
    t.set_defaults(func=run_transfer)


def run_substitute(args: argparse.Namespace) -> int:
    fields = ("seeds", "rounds", "lam", "substitute", "epochs", "eps", "n_eval", "tau", "reservoir_from",
              "reservoir_size", "optimizer", "lr", "batch_size", "jacobian", "craft", "seed", "dataset")
    settings = SubstituteSettings(**{k: getattr(args, k) for k in fields},
                                  ensemble=tuple(a.strip() for a in args.ensemble.split(",") if a.strip()))
    device = device_from(args)
    test = dataset_split(args, "test")
    settings.check(len(test))
    oracle, described, model = make_oracle(args, device)
    # evaluation queries are not the attacker's: they go to a separate oracle, outside --budget
    eval_oracle = (LocalOracle(model, labels_only=oracle.labels_only, input_shape=oracle.input_shape)
                   if model is not None else make_oracle(args, device, budget=False)[0])
    config = {"oracle": described, "labels_only": oracle.labels_only, "budget": args.budget, **settings.config()}
    try:
        with RunDir(args.out, "substitute", config, overwrite=args.overwrite) as run_dir:
            result = substitute_attack(oracle, eval_oracle, test, settings, device, args.progress)
            add_substitute_section(run_dir, result, settings, described)
            out = run_dir.commit()
    finally:
        for o in (oracle, eval_oracle):
            if isinstance(o, HttpOracle):
                o.close()
    for h in result["history"]:
        print(f"round {h['round']}: {h['oracle_queries']} oracle labels, substitute accuracy "
              f"{h['substitute_accuracy']:.4f}, FGSM transfer rate {h['transfer_rate']:.4f}")
    final = result["final"]
    print(f"final: {args.craft} on {' + '.join(final['substitutes'])}: transfer rate {final['transfer_rate']:.4f} "
          f"(substitute accuracy {final['substitute_accuracy']:.4f}) after {final['oracle_labels']} oracle labels")
    print(f"report: {out / 'report.html'}")
    return 0


def run_transfer(args: argparse.Namespace) -> int:
    from advlab.evaluation.transfer import parse_model_specs, train_on_halves, transfer_matrix

    device = device_from(args)
    specs = parse_model_specs(args.models)
    test = dataset_split(args, "test", args.n)
    models = train_on_halves(specs, args.dataset, device, args.data_dir, progress=args.progress)
    for name, (_model, meta) in models.items():
        check_model_fits(meta, test, name)
    x, y = test.tensors()
    with RunDir(args.out, "transfer", {"models": args.models, "attack": args.attack, "eps": args.eps,
                                       "steps": args.steps, "n": len(x), "dataset": args.dataset},
                overwrite=args.overwrite) as run_dir:
        result = transfer_matrix({k: m for k, (m, _) in models.items()}, x.to(device), y.to(device), args.attack,
                                 args.eps, args.steps)
        run_dir.metrics = {**result, "test_accuracy": {k: validate_metadata(meta, k).test_accuracy
                                                       for k, (_, meta) in models.items()}}
        add_transfer_section(run_dir, result, args.attack, args.eps, len(x))
        out = run_dir.commit()
    names = result["names"]
    print("source \\ target: " + "  ".join(names))
    for src, row in zip(names, result["matrix"], strict=True):
        print(f"{src}: " + "  ".join(f"{v:.3f}" for v in row))
    print(f"report: {out / 'report.html'}")
    return 0

