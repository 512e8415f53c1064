"""Report sections the demo shares with commands, kept here until they move into the library.

add_clean_section (cli/eval.py), add_comparison (cli/evaluate.py) and add_certify_section with
accuracy_table (cli/certify.py) are the builders of those commands' sections; issue 18 moves them
into advlab.report. These copies keep the demo free of CLI code meanwhile: when the report's own
versions land, import them instead and delete this module.
"""

from __future__ import annotations

from advlab.evaluation import evaluate_clean
from advlab.evaluation.certified import DEFAULT_RADII, CertificationResult
from advlab.report.attack_figures import robust_curve_figure
from advlab.report.certify_figures import COHEN_CIFAR10, certified_accuracy_figure
from advlab.report.figures import confusion_matrix_figure
from advlab.report.run import RunDir


def add_clean_section(run_dir: RunDir, model, meta: dict, data, device, label: str) -> dict:
    result = evaluate_clean(model, data, device)
    fig = confusion_matrix_figure(result.confusion, data.classes, run_dir.figure_path("confusion.png"),
                                  f"{label}: accuracy {result.accuracy:.4f}")
    table = {"columns": ["class", "accuracy", "images"],
             "rows": [[c, a, int(n)] for c, a, n in zip(data.classes, result.per_class_accuracy,
                                                        result.confusion.sum(1), strict=True)]}
    run_dir.add_section("Clean accuracy", f"{label} on {result.n} {data.name} images: accuracy "
                        f"{result.accuracy:.4f}, mean top-1 confidence {result.mean_confidence:.3f}.",
                        table=table, figures=[(fig.name, "confusion matrix (rows: true class)")], key="clean")
    return result.to_dict()


COMPARISON_TEXT = ("Clean accuracy and worst-case robust accuracy (FGSM, PGD on the cross-entropy and on the C&W "
                   "margin, per sample) of each model at each eps, and whether any gradient-masking check fired.")


def add_comparison(run_dir: RunDir, results: dict, title: str = "Comparison", text: str = COMPARISON_TEXT,
                   key: str = "evaluate_comparison", first: bool = True) -> None:
    """The comparison table and figure of several evaluations, as the report's first section (or last)."""
    eps = next(iter(results.values()))["eps"]
    rows = [[r["label"], r["clean_accuracy"], *r["worst_case"], "yes" if r["masking_suspected"] else "no"]
            for r in results.values()]
    curves = {r["label"]: ([0.0, *eps], [r["clean_accuracy"], *r["worst_case"]]) for r in results.values()}
    fig = robust_curve_figure(curves, run_dir.figure_path(f"{key}.png"), "linf", "worst-case robust accuracy per model")
    section = {"title": title, "key": key, "text": text,
               "table": {"columns": ["model", "clean", *[f"eps {e:g}" for e in eps], "masking suspected"],
                         "rows": rows},
               "figures": [{"file": fig.name, "caption": "worst-case robust accuracy against L-inf eps"}]}
    run_dir.sections.insert(0 if first else len(run_dir.sections), section)


def accuracy_table(results: list[tuple[str, CertificationResult]], radii=DEFAULT_RADII) -> dict:
    return {"columns": ["setting", *[f"r = {r:g}" for r in radii], "abstain", "images", "n", "ceiling",
                        "wall s", "images/s"],
            "rows": [[label, *[res.certified_accuracy(r) for r in radii], res.summary()["abstain_rate"],
                      len(res.records), res.n, round(res.ceiling, 3), round(res.seconds, 1),
                      round(res.images_per_second, 3)] for label, res in results]}


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
