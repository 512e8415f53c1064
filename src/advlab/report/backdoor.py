"""Report sections of a backdoor pipeline run (`advlab.evaluation.backdoor.run_backdoor`)."""

from __future__ import annotations

import torch

from advlab.data import ImageDataset
from advlab.detection.spectre import pca_scores, whiten_robustly
from advlab.evaluation.backdoor import BackdoorResult
from advlab.poisoning import triggered_test_set
from advlab.report.backdoor_figures import projection_figure, score_histogram_figure
from advlab.report.figures import image_grid_figure
from advlab.report.run import RunDir


def add_backdoor_sections(run_dir: RunDir, result: BackdoorResult, test: ImageDataset, prefix: str = "") -> None:
    """The comparison table with triggered examples, and the target class's representations (the
    lecture's figure): PCA projection before and after robust whitening, detector score histograms."""
    metrics, poisoned, settings = result.metrics, result.poisoned, result.settings
    target_features, target_truth, class_scores = result.target_features, result.target_truth, result.class_scores
    target_name = poisoned.data.classes[poisoned.target]
    desc = poisoned.describe()
    columns = ["model", "clean accuracy", "attack success", "removed", "poisons removed (TP)", "clean removed (FP)"]
    rows = [["unpoisoned", metrics["unpoisoned"]["clean_accuracy"], metrics["unpoisoned"]["attack_success"],
             "", "", ""],
            ["poisoned, no defense", metrics["poisoned"]["clean_accuracy"], metrics["poisoned"]["attack_success"],
             "", "", ""]]
    for name, entry in metrics["defenses"].items():
        after = entry.get("after", {})
        rows.append([f"after {name}", after.get("clean_accuracy", "not retrained"), after.get("attack_success", ""),
                     entry["removed"], entry["true_positives"], entry["false_positives"]])
    others = torch.nonzero(test.labels != poisoned.target).flatten()
    picks = test.subset(others[torch.linspace(0, len(others) - 1, 6).long()])  # spread over the (maybe sorted) set
    examples = triggered_test_set(picks, poisoned.trigger, poisoned.target)
    shown = torch.cat([picks.tensors()[0], examples.tensors()[0]])
    grid = image_grid_figure(shown, ["clean"] * 6 + ["triggered"] * 6, run_dir.figure_path(f"{prefix}triggers.png"),
                             cols=6, suptitle=f"{poisoned.trigger.name} trigger")
    text = (f"{desc['n_poison']} of {desc['n']} training images ({100 * desc['n_poison'] / desc['n']:.2f}%) carry "
            f"the {poisoned.trigger.name} trigger {poisoned.trigger.describe()} and the label '{target_name}' "
            f"(taken from {'every other class' if desc['source'] is None else desc['source']}). Model "
            f"{metrics['train_config']['model']}, {metrics['train_config']['epochs']} epochs. Attack success = share "
            f"of triggered test images of the other classes predicted '{target_name}'. Detection on "
            f"{metrics['layer_description']} ({metrics['features_shape'][1]} dims), scanning "
            f"{'the target class' if settings.scan == 'target' else 'every class'} with m = {desc['n_poison']}; "
            f"each defense removes round(1.5 m) per class (activation clustering: its flagged cluster, capped).")
    run_dir.add_section(f"Backdoor ({poisoned.trigger.name} trigger)", text,
                        table={"columns": columns, "rows": rows},
                        figures=[(grid.name, "test images without and with the trigger")], key=f"{prefix}backdoor")
    figures = []
    if len(target_features) > 7:
        before = pca_scores(target_features, 6)
        m = int(target_truth.sum()) or desc["n_poison"]
        after, _ = whiten_robustly(before, m) if before.shape[1] > 1 else (None, None)
        fig = projection_figure(before, after, target_truth, run_dir.figure_path(f"{prefix}projection.png"),
                                f"'{target_name}' training images: {metrics['layer_description']}")
        figures.append((fig.name, f"top-6 PCA projection of the '{target_name}' representations (blue clean, red "
                        "poisoned), before and after whitening with the robust covariance of clean + poisoned"))
    if class_scores:
        fig = score_histogram_figure(class_scores, target_truth, run_dir.figure_path(f"{prefix}scores.png"),
                                     f"detector scores on '{target_name}'")
        figures.append((fig.name, "detector scores, clean against poisoned (log counts)"))
    run_dir.add_section("Representations of the target class", "Middle-to-late-layer representations of the "
                        f"'{target_name}' training images, clean and poisoned marked (the lecture's figure).",
                        figures=figures, key=f"{prefix}backdoor_figures")
