"""advlab blackbox / substitute / transfer: attacks that see only an oracle, and transferability.

``advlab blackbox --oracle http://127.0.0.1:8000 --attack square --eps 0.3 --n 100 --queries 10000``
attacks a model served by ``advlab serve``; ``--model CHECKPOINT_OR_NAME`` attacks an in-process
oracle instead. ``run_oracle_attack(args)`` is the shared core (``advlab attack --oracle`` calls it).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from advlab.attacks.blackbox import BLACKBOX_ATTACKS, HttpOracle, LocalOracle, Oracle
from advlab.attacks.blackbox.base import BlackBoxAttack
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
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
    probability,
    resolve_model,
    seed_int,
)
from advlab.errors import AdvlabError
from advlab.models import model_metadata
from advlab.report.blackbox_figures import (
    budget_grid,
    substitute_figure,
    success_curve,
    success_vs_queries_figure,
    transfer_matrix_figure,
)
from advlab.report.figures import image_grid_figure
from advlab.report.run import RunDir

DEMO_ORDER = 40
DEFAULT_EPS = {"linf": 0.3, "l2": 2.0}


def add_oracle_args(p: argparse.ArgumentParser) -> None:
    """The flags that choose and limit the oracle (shared by every command that attacks through one)."""
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--oracle", metavar="URL", help="URL of an `advlab serve` prediction API")
    where.add_argument("--model", help="an in-process oracle of any model spec: " + MODEL_SPEC_HELP)
    add_model_spec_args(p)
    p.add_argument("--token", default=None, help="bearer token for --oracle (the server's --token)")
    p.add_argument("--labels-only", action="store_true", help="in-process oracle answers top labels only")
    p.add_argument("--budget", type=positive_int, default=None,
                   help="total oracle queries (images) allowed for the whole run (default: unlimited)")


def add_blackbox_attack_args(p: argparse.ArgumentParser) -> None:
    """Flags of a black-box attack run; `advlab attack --oracle` needs the same ones."""
    p.add_argument("--attack", default="square",
                   help=f"comma-separated black-box attacks: {', '.join(BLACKBOX_ATTACKS)} (default: %(default)s)")
    p.add_argument("--norm", choices=("linf", "l2"), default="linf")
    p.add_argument("--eps", type=nonnegative_float(), default=None,
                   help="perturbation bound (default: 0.3 Linf, 2.0 L2)")
    p.add_argument("--n", type=positive_int, default=100, help="attack the first N test images")
    p.add_argument("--queries", type=positive_int, default=10_000, help="query limit per image (default 10000)")
    p.add_argument("--batch", type=positive_int, default=100, help="images attacked together")
    p.add_argument("--p-init", type=probability, default=None, help="Square: initial window fraction p")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--whitebox-pgd", action="store_true",
                   help="also run white-box PGD-100 on the same images (in-process --model only)")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("blackbox", help="score- or decision-based attacks through an oracle (HTTP or in-process)",
                       description="Attack a classifier you can only query: Square, NES, ZOO (probabilities) or "
                       "HopSkipJump (labels only). Reports success rate and queries per image on the images the "
                       "oracle classifies correctly, and success against the query budget.")
    add_oracle_args(p)
    add_blackbox_attack_args(p)
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


# --- oracle attacks ---
def make_oracle(args: argparse.Namespace, device: torch.device) -> tuple[Oracle, str, torch.nn.Module | None]:
    """The oracle the flags describe: (oracle, description, local model or None)."""
    if getattr(args, "oracle", None):
        if args.labels_only:
            raise AdvlabError("--labels-only applies to an in-process --model; a server decides with its own "
                              "--labels-only")
        oracle = HttpOracle(args.oracle, token=args.token, budget=args.budget)
        return oracle, args.oracle, None
    model, meta = resolve_model(args.model, args, device)
    info = model_metadata(meta, args.model)
    if info.kind != "classifier":
        raise AdvlabError(f"{args.model} is a {info.architecture} {info.kind}; an oracle needs a classifier")
    oracle = LocalOracle(model, labels_only=args.labels_only, budget=args.budget, input_shape=info.input_shape)
    return oracle, f"in-process {args.model}", model


def build_attack(name: str, args: argparse.Namespace, eps: float) -> BlackBoxAttack:
    if name not in BLACKBOX_ATTACKS:
        raise AdvlabError(f"unknown black-box attack {name!r}; choose one of {', '.join(BLACKBOX_ATTACKS)}")
    kwargs = {"eps": eps, "norm": args.norm, "max_queries": args.queries, "seed": args.seed}
    if name == "square" and getattr(args, "p_init", None) is not None:
        kwargs["p_init"] = args.p_init
    return BLACKBOX_ATTACKS[name](**kwargs)


def attack_in_batches(attack: BlackBoxAttack, oracle: Oracle, x: torch.Tensor, y: torch.Tensor, batch: int,
                      progress: bool = True) -> dict:
    """Run attack over x in batches; per-image results concatenated (numpy) plus the wall time."""
    parts: dict[str, list] = {"success": [], "clean_correct": [], "queries": [], "queries_at_success": [],
                              "linf": [], "l2": [], "adv_pred": []}
    advs = []
    start = time.perf_counter()
    exhausted = False
    for lo in tqdm(range(0, len(x), batch), desc=attack.name, disable=not progress, unit="batch"):
        if exhausted:
            break
        r = attack(oracle, x[lo:lo + batch], y[lo:lo + batch])
        exhausted = r.extra["budget_exhausted"]
        parts["success"].append(r.success.cpu().numpy())
        parts["clean_correct"].append(r.clean_correct.cpu().numpy())
        parts["queries"].append(r.extra["queries"].numpy())
        parts["queries_at_success"].append(r.extra["queries_at_success"].numpy())
        parts["linf"].append(r.norms["linf"].cpu().numpy())
        parts["l2"].append(r.norms["l2"].cpu().numpy())
        parts["adv_pred"].append(r.adv_pred.cpu().numpy())
        advs.append(r.adv.cpu())
    out = {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}
    out["adv"] = torch.cat(advs) if advs else x[:0]
    out["seconds"] = time.perf_counter() - start
    out["budget_exhausted"] = exhausted
    return out


def summarize(run: dict, max_queries: int) -> dict:
    """Success rate and query statistics on the images the oracle classified correctly."""
    ok = run["clean_correct"].astype(bool)
    broken = run["success"].astype(bool) & ok
    q = run["queries_at_success"][broken]
    budgets = [b for b in (100, 500, 1000, 2500, 5000, 10_000) if b <= max_queries]
    return {"images": int(len(ok)), "clean_correct": int(ok.sum()),
            "success_rate": float(broken.sum() / max(ok.sum(), 1)),
            "median_queries": float(np.median(q)) if len(q) else None,
            "mean_queries": float(np.mean(q)) if len(q) else None,
            "total_queries": int(run["queries"].sum()),
            "success_at_budget": {str(b): float(((run["queries_at_success"][ok] >= 0)
                                                 & (run["queries_at_success"][ok] <= b)).mean()) if ok.any() else 0.0
                                  for b in budgets},
            "max_linf_of_successes": float(run["linf"][broken].max()) if broken.any() else None,
            "max_l2_of_successes": float(run["l2"][broken].max()) if broken.any() else None,
            "seconds": run["seconds"], "budget_exhausted": bool(run["budget_exhausted"])}


def whitebox_pgd(model, x, y, eps: float, norm: str) -> dict:
    from advlab.attacks import PGD

    steps = 100
    result = PGD(eps=eps, steps=steps, step_size=2.5 * eps / steps, norm=norm, random_start=False, loss="ce")(
        model, x, y)
    ok = result.clean_correct
    return {"attack": f"PGD-{steps} (white-box, step 2.5 eps/{steps})",
            "success_rate": float((result.success & ok).sum() / max(int(ok.sum()), 1)), "clean_correct": int(ok.sum())}


ORACLE_ATTACK_DEFAULTS = {"token": None, "budget": None, "labels_only": False, "model": None, "norm": "linf",
                          "eps": None, "n": 100, "queries": 10_000, "batch": 100, "p_init": None, "seed": 0,
                          "whitebox_pgd": False, "progress": True, "out": None, "device": "auto",
                          "dataset": "mnist", "data_dir": None, "image_size": 32, "channels": 3}


def run_oracle_attack(args: argparse.Namespace) -> int:
    """Attack the first --n test images through the oracle with each --attack; write a run folder.

    Needs args.oracle (URL) or args.model, and args.attack (comma-separated black-box names); every
    other field falls back to ORACLE_ATTACK_DEFAULTS, so `advlab attack --oracle` can call it as is."""
    if not hasattr(args, "batch") and getattr(args, "batch_size", None):
        args.batch = args.batch_size  # `advlab attack` calls it --batch-size
    for key, value in ORACLE_ATTACK_DEFAULTS.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if not getattr(args, "oracle", None) and not args.model:
        raise AdvlabError("give --oracle URL (an `advlab serve` API) or --model for an in-process oracle")
    device = device_from(args)
    norm = args.norm
    eps = DEFAULT_EPS[norm] if args.eps is None else args.eps
    names = [a.strip() for a in args.attack.split(",") if a.strip()]
    attacks = [build_attack(name, args, eps) for name in names]  # unknown names fail before any work
    data = dataset_split(args, "test", args.n)
    oracle, described, model = make_oracle(args, device)
    if oracle.input_shape is not None and tuple(oracle.input_shape) != data.shape:
        raise AdvlabError(f"the oracle takes images of shape {tuple(oracle.input_shape)} but {data.name} images are "
                          f"{data.shape}; pass the matching --dataset")
    x, y = data.tensors()
    config = {"oracle": described, "attacks": names, "norm": norm, "eps": eps, "n": len(x),
              "queries_per_image": args.queries, "budget": args.budget, "seed": args.seed,
              "dataset": args.dataset, "labels_only": oracle.labels_only}
    with RunDir(args.out, "blackbox", config, overwrite=args.overwrite) as run_dir:
        summaries, curves = {}, {}
        last = None
        for attack in attacks:
            last = attack_in_batches(attack, oracle, x, y, args.batch, args.progress)
            summaries[attack.name] = summarize(last, args.queries)
            ok = last["clean_correct"].astype(bool)
            curves[attack.name] = last["queries_at_success"][ok]
            s = summaries[attack.name]
            med = "n/a" if s["median_queries"] is None else f"{s['median_queries']:.0f}"
            print(f"{attack.name}: success {s['success_rate']:.3f} on {s['clean_correct']} correctly classified "
                  f"images, median queries {med}, {s['total_queries']} queries, {s['seconds']:.0f} s")
        reference = {}
        metrics = {"attacks": summaries, "oracle_queries_used": oracle.used,
                   "curves": {k: {"budgets": budget_grid(args.queries).tolist(),
                                  "success": success_curve(v, budget_grid(args.queries)).tolist()}
                              for k, v in curves.items()}}
        if args.whitebox_pgd:
            if model is None:
                raise AdvlabError("--whitebox-pgd needs an in-process --model (white-box access)")
            wb = whitebox_pgd(model, x.to(device), y.to(device), eps, norm)
            metrics["whitebox"] = wb
            reference = {f"white-box PGD {wb['success_rate']:.3f}": wb["success_rate"],
                         "90% of white-box": 0.9 * wb["success_rate"]}
            for _name, s in summaries.items():
                s["ratio_to_whitebox"] = s["success_rate"] / max(wb["success_rate"], 1e-12)
            print(f"white-box PGD success {wb['success_rate']:.3f}; black-box/white-box: "
                  + ", ".join(f"{k} {v['ratio_to_whitebox']:.3f}" for k, v in summaries.items()))
        run_dir.metrics = metrics
        fig = success_vs_queries_figure(curves, args.queries, run_dir.figure_path("success_vs_queries.png"),
                                        f"{args.dataset}, {norm} eps {eps:g}, {described}", reference)
        table = {"columns": ["attack", "success rate", "median queries", "mean queries", "total queries", "seconds"],
                 "rows": [[k, round(v["success_rate"], 4), v["median_queries"], v["mean_queries"], v["total_queries"],
                           round(v["seconds"], 1)] for k, v in summaries.items()]}
        figures = [(fig.name, "success rate against the query budget per image")]
        if last is not None and len(last["adv"]):
            k = min(8, len(last["adv"]))
            grid = image_grid_figure(torch.cat([x[:k], last["adv"][:k]]),
                                     [f"clean {int(c)}" for c in y[:k]]
                                     + [f"adv: {int(p)}" if s else "failed"
                                        for s, p in zip(last["success"][:k], last["adv_pred"][:k], strict=True)],
                                     run_dir.figure_path("examples.png"), cols=k)
            figures.append((grid.name, f"clean images (top) and {attacks[-1].name} adversarial examples (bottom)"))
        run_dir.add_section("Black-box attacks", f"{len(x)} {data.name} images through {described}; {norm} eps "
                            f"{eps:g}; at most {args.queries} queries per image. Success rates are on the images the "
                            "oracle classified correctly.", table=table, figures=figures, key="blackbox")
        out = run_dir.commit()
    if isinstance(oracle, HttpOracle):
        oracle.close()
    print(f"report: {out / 'report.html'}")
    return 0


# --- substitute training ---
def crafting_attack(name: str, eps: float):
    from advlab.attacks import FGSM
    from advlab.attacks.mifgsm import MIFGSM

    if name == "fgsm":
        return FGSM(eps=eps, norm="linf")
    if name == "pgd":
        from advlab.attacks import PGD

        return PGD(eps=eps, steps=10, step_size=0.25 * eps, norm="linf", random_start=False)
    return MIFGSM(eps=eps, steps=10, decay=1.0, diversity=0.5 if name == "mifgsm-di" else 0.0)


def run_substitute(args: argparse.Namespace) -> int:
    from advlab.attacks.blackbox.substitute import SubstituteEnsemble, SubstituteTraining
    from advlab.models import architecture

    device = device_from(args)
    test = dataset_split(args, "test")
    if args.seeds + args.n_eval > len(test):
        raise AdvlabError(f"--seeds + --n-eval must fit in the {len(test)} test images")
    extra = [a.strip() for a in args.ensemble.split(",") if a.strip()]
    for name in [args.substitute, *extra]:
        architecture(name)  # unknown names fail before any query
    lr = args.lr if args.lr is not None else (1e-3 if args.optimizer == "adam" else 1e-2)
    batch_size = args.batch_size or (32 if args.optimizer == "adam" else 128)
    trainer = SubstituteTraining(architecture=args.substitute, dataset=args.dataset, rounds=args.rounds,
                                 lam=args.lam, epochs=args.epochs, lr=lr, batch_size=batch_size, fgsm_eps=args.eps,
                                 seed=args.seed, tau=args.tau, reservoir_from=args.reservoir_from,
                                 reservoir_size=args.reservoir_size, optimizer=args.optimizer, jacobian=args.jacobian)
    craft = crafting_attack(args.craft, args.eps)
    oracle, described, model = make_oracle(args, device)
    # evaluation queries are not the attacker's: they go to a separate oracle, outside --budget
    if model is not None:
        eval_oracle = LocalOracle(model, labels_only=oracle.labels_only, input_shape=oracle.input_shape)
    else:
        eval_oracle = HttpOracle(args.oracle, token=args.token)
    seeds_x, _ = test.subset(slice(0, args.seeds)).tensors()
    eval_x, eval_y = test.subset(slice(args.seeds, args.seeds + args.n_eval)).tensors()
    config = {"oracle": described, "labels_only": oracle.labels_only, "budget": args.budget, "seeds": args.seeds,
              "rounds": args.rounds, "lambda": args.lam, "tau": args.tau, "reservoir_from": args.reservoir_from,
              "reservoir_size": args.reservoir_size, "substitute": args.substitute, "ensemble": extra,
              "optimizer": args.optimizer, "lr": lr, "batch_size": batch_size, "jacobian": args.jacobian,
              "epochs_per_round": args.epochs, "eps": args.eps, "craft": args.craft, "n_eval": args.n_eval,
              "dataset": args.dataset}
    with RunDir(args.out, "substitute", config, overwrite=args.overwrite) as run_dir:
        substitute, history = trainer.train(oracle, seeds_x, eval_x, eval_y, eval_oracle, device=device,
                                            progress=args.progress)
        data_x, data_y = trainer.training_set
        generator = torch.Generator().manual_seed(args.seed)
        members = [substitute] + [trainer.fit(name, data_x, data_y, oracle.num_classes or 10, generator)
                                  for name in extra]
        final_model = members[0] if len(members) == 1 else SubstituteEnsemble(members)
        final = trainer.evaluate(final_model, eval_x.to(device), eval_y.to(device), eval_oracle, attack=craft)
        final.update({"substitutes": [args.substitute, *extra], "craft": args.craft,
                      "oracle_labels": history[-1]["oracle_queries"]})
        run_dir.metrics = {"history": history, "final": final, "oracle_labels": history[-1]["oracle_queries"],
                           "oracle_queries_used": oracle.used, "budget_exhausted": trainer.budget_exhausted}
        fig = substitute_figure(history, run_dir.figure_path("substitute.png"),
                                f"{args.substitute} substitute of {described}")
        table = {"columns": ["round", "oracle labels", "training set", "substitute accuracy", "FGSM transfer rate"],
                 "rows": [[h["round"], h["oracle_queries"], h["training_set"], round(h["substitute_accuracy"], 4),
                           round(h["transfer_rate"], 4)] for h in history]}
        run_dir.add_section("Substitute training", f"Papernot et al. 2017: {args.seeds} seed images labeled by the "
                            f"oracle, {args.rounds} Jacobian augmentation rounds (lambda {args.lam}, tau {args.tau}), "
                            f"substitute {args.substitute}; FGSM eps {args.eps} on the substitute; transfer rate = "
                            f"share of {args.n_eval} held-out images (correctly classified by the oracle) that the "
                            f"oracle misclassifies after the attack. Final: {args.craft} on "
                            f"{' + '.join(final['substitutes'])}, transfer rate {final['transfer_rate']:.4f} after "
                            f"{final['oracle_labels']} oracle labels.", table=table,
                            figures=[(fig.name, "substitute accuracy and transfer rate vs oracle queries")])
        out = run_dir.commit()
    for h in history:
        print(f"round {h['round']}: {h['oracle_queries']} oracle labels, substitute accuracy "
              f"{h['substitute_accuracy']:.4f}, FGSM transfer rate {h['transfer_rate']:.4f}")
    print(f"final: {args.craft} on {' + '.join(final['substitutes'])}: transfer rate {final['transfer_rate']:.4f} "
          f"(substitute accuracy {final['substitute_accuracy']:.4f}) after {final['oracle_labels']} oracle labels")
    for o in (oracle, eval_oracle):
        if isinstance(o, HttpOracle):
            o.close()
    print(f"report: {out / 'report.html'}")
    return 0


# --- transferability ---
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
        run_dir.metrics = {**result, "test_accuracy": {k: meta["test_accuracy"] for k, (_, meta) in models.items()}}
        fig = transfer_matrix_figure(np.array(result["matrix"]), result["names"],
                                     run_dir.figure_path("transfer_matrix.png"),
                                     f"{args.attack.upper()} eps {args.eps:g}: transfer success")
        table = {"columns": ["source \\ target", *result["names"]],
                 "rows": [[src, *[round(v, 3) for v in row]] for src, row in zip(result["names"], result["matrix"],
                                                                                  strict=True)]}
        run_dir.add_section("Transferability", f"{args.attack.upper()} (Linf eps {args.eps:g}) examples crafted on "
                            "each row's model and sent to each column's model; success = misclassified, among "
                            f"{len(x)} test images that both models classify correctly. A/B: disjoint halves of the "
                            "training set.", table=table, figures=[(fig.name, "transfer success matrix")])
        out = run_dir.commit()
    names = result["names"]
    print("source \\ target: " + "  ".join(names))
    for src, row in zip(names, result["matrix"], strict=True):
        print(f"{src}: " + "  ".join(f"{v:.3f}" for v in row))
    print(f"report: {out / 'report.html'}")
    return 0


# --- demo ---
def demo_section(ctx) -> None:
    """A small Square Attack against an in-process oracle of the demo model."""
    from advlab.attacks.blackbox import Square

    n, queries = (4, 300) if ctx.quick else (16, 2000)
    x, y = ctx.test_data.tensors(n)
    oracle = LocalOracle(ctx.model, input_shape=ctx.test_data.shape)
    result = Square(eps=0.3, max_queries=queries, p_init=0.3)(oracle, x.to(ctx.device), y.to(ctx.device))
    ok = result.clean_correct.cpu()
    q = result.extra["queries_at_success"][ok & result.success.cpu()]
    rate = float((result.success.cpu() & ok).sum() / max(int(ok.sum()), 1))
    med = float(q.float().median()) if len(q) else float("nan")
    fig = success_vs_queries_figure({"square": result.extra["queries_at_success"][ok].numpy()}, queries,
                                    ctx.run.figure_path("blackbox_square.png"), "Square Attack, Linf eps 0.3")
    ctx.run.add_section("Black-box: Square Attack", f"Square Attack (Andriushchenko et al. 2020) through an "
                        f"in-process probability oracle on {n} test images, Linf eps 0.3, at most {queries} queries "
                        f"per image: success {rate:.2f} on the {int(ok.sum())} correctly classified, median "
                        f"{med:.0f} queries ({result.cost.queries} queries in all). Run `advlab serve` and "
                        "`advlab blackbox --oracle URL` for the same attack over HTTP.",
                        figures=[(fig.name, "success rate against the query budget")], key="blackbox")
    ctx.run.metrics["blackbox"] = {"success_rate": rate, "median_queries": med, "queries": result.cost.queries}
