"""Report sections of the attack, black-box, substitute, transfer, accuracy, training and certify runs: each
takes a RunDir (or anything with ``figure_path`` and ``add_section``) and the library's result and adds
its figures, table and text. The CLI and `advlab demo` call the same functions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from advlab.attacks import MINIMAL_NORM_ATTACKS
from advlab.attacks.base import AttackResult
from advlab.data import ImageDataset
from advlab.evaluation import evaluate_clean
from advlab.evaluation.blackbox import BlackboxRun, SubstituteSettings
from advlab.evaluation.certified import DEFAULT_RADII, CertificationResult
from advlab.evaluation.robust import MinimalNormEvaluation
from advlab.report.attack_figures import robust_curve_figure, triptych_figure
from advlab.report.blackbox_figures import (
    budget_grid,
    substitute_figure,
    success_curve,
    success_vs_queries_figure,
    transfer_matrix_figure,
)
from advlab.report.certify_figures import COHEN_CIFAR10, certified_accuracy_figure
from advlab.report.figures import confusion_matrix_figure, image_grid_figure, training_curve_figure
from advlab.report.run import RunDir
from advlab.runtime import BatchSize


def add_attack_section(run_dir: RunDir, model: nn.Module, classes: Sequence[str], x: torch.Tensor,
                       result: AttackResult, summary: dict, name: str, eps: float | None, norm: str,
                       device: torch.device | str = "cpu") -> None:
    """The triptych of a few successes, the accuracy-versus-eps curve a minimal-norm attack implies
    (its median is added to summary), and the table of summary (AttackResult.summary plus "norm")."""
    ok = (result.success & result.clean_correct).nonzero().squeeze(1)[:4]
    figures = []
    if len(ok):
        fig = triptych_figure(model, x[ok].to(device), result.adv[ok].to(device),
                              run_dir.figure_path(f"{name}_triptych.png"), classes,
                              f"{name}: clean, perturbation, adversarial")
        figures.append((fig.name, "clean (label, confidence), perturbation magnified, adversarial"))
    if name in MINIMAL_NORM_ATTACKS:
        ev = MinimalNormEvaluation.from_result(result, norm)
        grid, acc = ev.curve()
        fig = robust_curve_figure({name: (grid, acc)}, run_dir.figure_path(f"{name}_curve.png"), norm,
                                  f"accuracy vs {norm} eps from {name}'s minimal norms", {name: ev.median})
        figures.append((fig.name, "robust accuracy implied by the per-sample minimal norms"))
        summary["median_minimal_norm"] = ev.median
    eps_text = "" if name in MINIMAL_NORM_ATTACKS or eps is None else f" at {norm} eps {eps:g}"
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


def add_clean_section(run_dir: RunDir, model: nn.Module, meta: dict, data: ImageDataset,
                      device: torch.device | str, label: str, batch_size: int | BatchSize = 500) -> dict:
    """Clean accuracy of model on data (advlab.evaluation.evaluate_clean) with the confusion matrix and
    the per-class table; returns the evaluation as a dict. `advlab accuracy` and `advlab demo` use it."""
    result = evaluate_clean(model, data, device, batch_size)
    fig = confusion_matrix_figure(result.confusion, data.classes, run_dir.figure_path("confusion.png"),
                                  f"{label}: accuracy {result.accuracy:.4f}")
    table = {"columns": ["class", "accuracy", "images"],
             "rows": [[c, a, int(n)] for c, a, n in zip(data.classes, result.per_class_accuracy,
                                                        result.confusion.sum(1), strict=True)]}
    run_dir.add_section("Clean accuracy", f"{label} on {result.n} {data.name} images: accuracy "
                        f"{result.accuracy:.4f}, mean top-1 confidence {result.mean_confidence:.3f}.",
                        table=table, figures=[(fig.name, "confusion matrix (rows: true class)")], key="clean")
    return result.to_dict()


def add_training_section(run_dir: RunDir, config, meta: dict, title: str, note: str = "") -> None:
    """The training curve and a line on the recipe and the test accuracy of a trained checkpoint."""
    curve = training_curve_figure(meta["history"], run_dir.figure_path("training.png"),
                                  f"{config.model} on {config.dataset}")
    run_dir.add_section(title, f"{config.model} on {config.dataset} (recipe {config.recipe}): clean test "
                        f"accuracy {meta['test_accuracy']:.4f} after {config.epochs} epochs "
                        f"({meta.get('train_seconds', 0):.0f} s on {meta.get('device')}). {note}".strip(),
                        figures=[(curve.name, "training loss and accuracy per epoch")])


def add_blackbox_section(run_dir: RunDir, run: BlackboxRun, x: torch.Tensor, y: torch.Tensor, data_name: str,
                         dataset: str, described: str) -> None:
    """Metrics, success-versus-queries figure, example grid and table of a black-box run."""
    s, eps = run.settings, run.settings.bound
    budgets = budget_grid(s.queries)
    run_dir.metrics = {"attacks": run.summaries, "oracle_queries_used": run.oracle_queries_used,
                       "curves": {k: {"budgets": budgets.tolist(), "success": success_curve(v, budgets).tolist()}
                                  for k, v in run.curves.items()}}
    reference = {}
    if run.whitebox is not None:
        run_dir.metrics["whitebox"] = run.whitebox
        rate = run.whitebox["success_rate"]
        reference = {f"white-box PGD {rate:.3f}": rate, "90% of white-box": 0.9 * rate}
    fig = success_vs_queries_figure(run.curves, s.queries, run_dir.figure_path("success_vs_queries.png"),
                                    f"{dataset}, {s.norm} eps {eps:g}, {described}", reference)
    table = {"columns": ["attack", "success rate", "median queries", "mean queries", "total queries", "seconds"],
             "rows": [[k, round(v["success_rate"], 4), v["median_queries"], v["mean_queries"], v["total_queries"],
                       round(v["seconds"], 1)] for k, v in run.summaries.items()]}
    figures = [(fig.name, "success rate against the query budget per image")]
    name, last = next(reversed(run.runs.items()))
    if len(last["adv"]):
        k = min(8, len(last["adv"]))
        titles = [f"clean {int(c)}" for c in y[:k]] + [f"adv: {int(p)}" if ok else "failed" for ok, p in
                                                       zip(last["success"][:k], last["adv_pred"][:k], strict=True)]
        grid = image_grid_figure(torch.cat([x[:k], last["adv"][:k]]), titles, run_dir.figure_path("examples.png"),
                                 cols=k)
        figures.append((grid.name, f"clean images (top) and {name} adversarial examples (bottom)"))
    run_dir.add_section("Black-box attacks", f"{len(x)} {data_name} images through {described}; {s.norm} eps "
                        f"{eps:g}; at most {s.queries} queries per image. Success rates are on the images the "
                        "oracle classified correctly.", table=table, figures=figures, key="blackbox")


def add_substitute_section(run_dir: RunDir, result: dict, settings: SubstituteSettings, described: str) -> None:
    """Metrics, accuracy-and-transfer figure and per-round table of a substitute run."""
    s, history, final = settings, result["history"], result["final"]
    run_dir.metrics = dict(result)
    fig = substitute_figure(history, run_dir.figure_path("substitute.png"), f"{s.substitute} substitute of {described}")
    table = {"columns": ["round", "oracle labels", "training set", "substitute accuracy", "FGSM transfer rate"],
             "rows": [[h["round"], h["oracle_queries"], h["training_set"], round(h["substitute_accuracy"], 4),
                       round(h["transfer_rate"], 4)] for h in history]}
    run_dir.add_section("Substitute training", f"Papernot et al. 2017: {s.seeds} seed images labeled by the "
                        f"oracle, {s.rounds} Jacobian augmentation rounds (lambda {s.lam}, tau {s.tau}), "
                        f"substitute {s.substitute}; FGSM eps {s.eps} on the substitute; transfer rate = "
                        f"share of {s.n_eval} held-out images (correctly classified by the oracle) that the "
                        f"oracle misclassifies after the attack. Final: {s.craft} on "
                        f"{' + '.join(final['substitutes'])}, transfer rate {final['transfer_rate']:.4f} after "
                        f"{final['oracle_labels']} oracle labels.", table=table,
                        figures=[(fig.name, "substitute accuracy and transfer rate vs oracle queries")])


def add_transfer_section(run_dir: RunDir, result: dict, attack: str, eps: float, n: int) -> None:
    """The transfer-success matrix (advlab.evaluation.transfer.transfer_matrix) as figure and table."""
    names = result["names"]
    fig = transfer_matrix_figure(np.array(result["matrix"]), names, run_dir.figure_path("transfer_matrix.png"),
                                 f"{attack.upper()} eps {eps:g}: transfer success")
    table = {"columns": ["source \\ target", *names],
             "rows": [[src, *[round(v, 3) for v in row]] for src, row in zip(names, result["matrix"], strict=True)]}
    run_dir.add_section("Transferability", f"{attack.upper()} (Linf eps {eps:g}) examples crafted on each row's "
                        "model and sent to each column's model; success = misclassified, among "
                        f"{n} test images that both models classify correctly. A/B: disjoint halves of the "
                        "training set.", table=table, figures=[(fig.name, "transfer success matrix")])


def accuracy_table(results: list[tuple[str, CertificationResult]], radii=DEFAULT_RADII) -> dict:
    return {"columns": ["setting", *[f"r = {r:g}" for r in radii], "abstain", "images", "n", "ceiling",
                        "wall s", "images/s"],
            "rows": [[label, *[res.certified_accuracy(r) for r in radii], res.summary()["abstain_rate"],
                      len(res.records), res.n, round(res.ceiling, 3), round(res.seconds, 1),
                      round(res.images_per_second, 3)] for label, res in results]}


def write_records(path, result: CertificationResult) -> None:
    """Per-image lines in the layout of Cohen et al.'s certify.py output."""
    lines = ["idx\tlabel\tpredict\tradius\tcorrect\ttime"]
    lines += [f"{r.index}\t{r.label}\t{r.prediction}\t{r.radius:.4f}\t{int(r.correct)}\t{r.seconds:.3f}"
              for r in result.records]
    path.write_text("\n".join(lines) + "\n")


def add_certify_section(run_dir: RunDir, results: list[tuple[str, CertificationResult]], dataset: str,
                        meta: dict, key: str = "certify", title: str = "Certified robustness") -> None:
    sigmas = {res.sigma for _, res in results}
    reference = ({f"Cohen et al. ResNet-110 sigma={s:g}": COHEN_CIFAR10[s] for s in sigmas if s in COHEN_CIFAR10}
                 if dataset == "cifar10" else None)
    fig = certified_accuracy_figure(results, run_dir.figure_path(f"{key}_curve.png"), reference=reference)
    res = results[0][1]
    text = (f"Randomized smoothing (Cohen et al. 2019, CERTIFY) of {meta['architecture']} "
            f"(recipe {meta.get('recipe')}) on {len(res.records)} {dataset} test images: n0 = {res.n0}, "
            f"n = {res.n:,}, alpha = {res.alpha:g}. Certified accuracy at r is the share of images classified "
            f"correctly with a certified L2 radius of at least r; no radius above sigma * Phi^-1(alpha^(1/n)) "
            f"= {res.ceiling:.3f} can be certified with this n. Wall time {res.seconds:.1f} s "
            f"({res.images_per_second:.3f} images/s).")
    run_dir.add_section(title, text, table=accuracy_table(results),
                        figures=[(fig.name, "certified accuracy against L2 radius")], key=key)
