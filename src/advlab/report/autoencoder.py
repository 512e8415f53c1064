"""The report section of an autoencoder attack sweep (`advlab.evaluation.autoencoder`)."""

from __future__ import annotations

from advlab.evaluation.autoencoder import AutoencoderSweep
from advlab.report.physical_figures import autoencoder_attack_figure, distortion_similarity_figure
from advlab.report.run import RunDir


def autoencoder_section(run_dir: RunDir, sweep: AutoencoderSweep, label: str) -> None:
    """The sweep's table, an example figure at the middle budget, and distortion against similarity."""
    metrics, norm, modes, budgets = sweep.metrics, sweep.norm, sweep.modes, sweep.budgets
    columns = ["mode", "eps", f"mean {norm}", "MSE to target", "SSIM to target", "noise MSE", "noise SSIM"]
    if sweep.has_classifier:
        columns.append("read as target class")
    table_rows = []
    for mode, rows in metrics["sweep"].items():
        for r in rows:
            row = [mode, r["eps"], r[norm], r["mse_to_target"], r["ssim_to_target"], r["noise_mse_to_target"],
                   r["noise_ssim_to_target"]]
            if sweep.has_classifier:
                row.append(r["target_class_rate"])
            table_rows.append(row)
    mid = budgets[len(budgets) // 2] if len(budgets) > 1 else budgets[0]
    shown = sweep.results[modes[0]][max(b for b in budgets if b <= mid)] if budgets else None
    figure = autoencoder_attack_figure(shown.source, shown.adv, shown.reconstruction, shown.target,
                                       run_dir.figure_path("autoencoder_attack.png"), rows=4,
                                       title=f"{modes[0]} attack, {norm} eps {mid:g}")
    curve = distortion_similarity_figure(metrics["sweep"], run_dir.figure_path("autoencoder_sweep.png"), norm)
    reference, n, steps = metrics["reference"], metrics["n"], metrics["steps"]
    src, best = reference["source_reconstruction_to_target"], reference["target_reconstruction_to_target"]
    run_dir.add_section(
        "Attacking an autoencoder",
        f"{label}: {n} test images, each paired with a random test image of another class as target; "
        f"{steps} projected gradient steps per budget. Without attack the reconstruction's MSE to the target is "
        f"{src['mse']:.4f} (SSIM {src['ssim']:.3f}); the best possible, the target's own reconstruction, is "
        f"{best['mse']:.4f} (SSIM {best['ssim']:.3f}). 'noise' columns: random noise of the same "
        "size as the attack's perturbation.",
        table={"columns": columns, "rows": table_rows},
        figures=[(figure.name, "source, perturbed source, its reconstruction, the target"),
                 (curve.name, "input distortion against similarity of the reconstruction to the target")],
        key="autoencoder")


def sweep_lines(metrics: dict) -> list[str]:
    """The sweep as printed lines: similarity to the target against the noise baseline per budget."""
    lines = []
    for mode, rows in metrics["sweep"].items():
        for r in rows:
            extra = f", read as target {r['target_class_rate']:.2f}" if "target_class_rate" in r else ""
            lines.append(f"{mode} eps {r['eps']:g}: MSE to target {r['mse_to_target']:.4f} (noise "
                         f"{r['noise_mse_to_target']:.4f}), SSIM {r['ssim_to_target']:.3f} (noise "
                         f"{r['noise_ssim_to_target']:.3f}){extra}")
    return lines
