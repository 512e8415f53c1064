"""advlab autoencoder-attack: make natural images reconstruct as other images (Tabacof et al. 2016;
Kos, Fischer and Song 2017), over a sweep of budgets, with the lecture's figure."""

from __future__ import annotations

import argparse

import torch

from advlab.attacks.autoencoder import AutoencoderAttack, budget_sweep, pair_with_targets, reconstruction_similarity
from advlab.cli.common import (
    add_data_args,
    add_device_arg,
    add_out_arg,
    add_progress_arg,
    check_model_fits,
    dataset_split,
    device_from,
    float_list,
    nonnegative_float,
    positive_int,
    resolve_model,
    seed_int,
)
from advlab.errors import AdvlabError
from advlab.models import architecture, load_checkpoint
from advlab.report.physical_figures import autoencoder_attack_figure, distortion_similarity_figure
from advlab.report.run import RunDir
from advlab.training.autoencoder import autoencoder_config, train_autoencoder
from advlab.training.cache import cached_checkpoint_path

DEMO_ORDER = 70
DEFAULT_BUDGETS = {"linf": "0.05,0.1,0.2,0.3", "l2": "1,2,3,4"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("autoencoder-attack", help="make images reconstruct as other images (latent/output attacks)",
                       description="Attack an autoencoder: perturb source images so that their reconstructions "
                       "become target images of other classes, by matching the target's latent code or its "
                       "reconstruction, for a sweep of budgets. Reports input distortion against the MSE/SSIM of "
                       "the reconstruction to the target, and the share a separate classifier reads as the "
                       "target's class.")
    p.add_argument("--autoencoder", default="conv_autoencoder", help="conv_autoencoder, conv_vae (trained with the "
                   "reconstruction recipe, cached) or a .safetensors checkpoint (default: %(default)s)")
    p.add_argument("--classifier", default=None, help="classifier that reads the reconstructions: a checkpoint, an "
                   "architecture name, or 'none' (default: the data set's default model)")
    p.add_argument("--mode", default="latent,output", help="latent, output or both (default: %(default)s)")
    p.add_argument("--norm", choices=("linf", "l2"), default="linf", help="budget norm (default: %(default)s)")
    p.add_argument("--budgets", type=float_list, default=None,
                   help="comma-separated eps values (default linf: 0.05,0.1,0.2,0.3; l2: 1,2,3,4)")
    p.add_argument("--penalty", type=nonnegative_float(), default=None,
                   help="also run the penalized attack with this lambda")
    p.add_argument("--steps", type=positive_int, default=100, help="attack iterations (default: %(default)s)")
    p.add_argument("--n", type=positive_int, default=100, help="source images (default: %(default)s)")
    p.add_argument("--epochs", type=positive_int, default=None, help="autoencoder training epochs (default: recipe)")
    p.add_argument("--train-subset", type=positive_int, default=None, help="train the autoencoder on N images")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the source/target pairing (default: %(default)s)")
    p.add_argument("--random-subset", action="store_true", help="draw sources and the target pool by a fixed random "
                   "permutation (--seed) instead of the first images (a CIFAR-10 image folder is sorted by class)")
    add_data_args(p)
    add_device_arg(p)
    add_out_arg(p)
    add_progress_arg(p)
    p.set_defaults(func=run)


def resolve_autoencoder(spec: str, args, device: torch.device):
    """A checkpoint of an autoencoder, or an autoencoder architecture trained with its recipe."""
    if spec.endswith(".safetensors"):
        model, meta = load_checkpoint(spec, device)
        if architecture(meta["architecture"]).kind != "autoencoder":
            raise AdvlabError(f"{spec} holds a {meta['architecture']} classifier, not an autoencoder")
        return model, meta
    config = autoencoder_config(args.dataset, model=spec, epochs=args.epochs, train_subset=args.train_subset)
    model, meta, _, _ = train_autoencoder(config, device, args.data_dir, progress=args.progress)
    return model, meta


def parse_modes(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in ("latent", "output")]
    if not modes or bad:
        raise AdvlabError(f"unknown attack mode {', '.join(bad) or text!r}; choose latent, output or both")
    return modes


def sweep_section(run_dir: RunDir, autoencoder, classifier, x, y, pool_x, pool_y, modes: list[str], norm: str,
                  budgets: list[float], steps: int, seed: int, label: str, penalty: float | None = None) -> dict:
    """Run the sweep for each mode, add the table and figures to run_dir, and return the metrics."""
    idx = pair_with_targets(y, pool_y, seed)
    x_t, y_t = pool_x[idx], pool_y[idx]
    with torch.no_grad():
        clean_recon = autoencoder.eval()(x)
        reference = {"source_reconstruction_to_target": reconstruction_similarity(clean_recon, x_t),
                     "target_reconstruction_to_target": reconstruction_similarity(autoencoder(x_t), x_t)}
    reference = {k: {m: v.mean().item() for m, v in d.items()} for k, d in reference.items()}
    rows_by_mode, results_by_mode = {}, {}
    for mode in modes:
        rows_by_mode[mode], results_by_mode[mode] = budget_sweep(autoencoder, classifier, x, x_t, y_t, budgets,
                                                                 mode, norm, steps, seed)
    columns = ["mode", "eps", f"mean {norm}", "MSE to target", "SSIM to target", "noise MSE", "noise SSIM"]
    if classifier is not None:
        columns.append("read as target class")
    table_rows = []
    for mode, rows in rows_by_mode.items():
        for r in rows:
            row = [mode, r["eps"], r[norm], r["mse_to_target"], r["ssim_to_target"], r["noise_mse_to_target"],
                   r["noise_ssim_to_target"]]
            if classifier is not None:
                row.append(r["target_class_rate"])
            table_rows.append(row)
    metrics = {"sweep": rows_by_mode, "reference": reference, "n": len(x), "steps": steps, "norm": norm}
    if penalty is not None:
        result = AutoencoderAttack(modes[0], eps=None, norm=norm, steps=steps, penalty=penalty)(autoencoder, x, x_t)
        metrics["penalized"] = {"lambda": penalty, "mode": modes[0], **result.summary()}
    mid = budgets[len(budgets) // 2] if len(budgets) > 1 else budgets[0]
    shown = results_by_mode[modes[0]][max(b for b in budgets if b <= mid)] if budgets else None
    figure = autoencoder_attack_figure(shown.source, shown.adv, shown.reconstruction, shown.target,
                                       run_dir.figure_path("autoencoder_attack.png"), rows=4,
                                       title=f"{modes[0]} attack, {norm} eps {mid:g}")
    curve = distortion_similarity_figure(rows_by_mode, run_dir.figure_path("autoencoder_sweep.png"), norm)
    src, best = reference["source_reconstruction_to_target"], reference["target_reconstruction_to_target"]
    run_dir.add_section(
        "Attacking an autoencoder",
        f"{label}: {len(x)} test images, each paired with a random test image of another class as target; "
        f"{steps} projected gradient steps per budget. Without attack the reconstruction's MSE to the target is "
        f"{src['mse']:.4f} (SSIM {src['ssim']:.3f}); the best possible, the target's own reconstruction, is "
        f"{best['mse']:.4f} (SSIM {best['ssim']:.3f}). 'noise' columns: random noise of the same "
        "size as the attack's perturbation.",
        table={"columns": columns, "rows": table_rows},
        figures=[(figure.name, "source, perturbed source, its reconstruction, the target"),
                 (curve.name, "input distortion against similarity of the reconstruction to the target")],
        key="autoencoder")
    return metrics


def run(args: argparse.Namespace) -> int:
    device = device_from(args)
    modes = parse_modes(args.mode)
    budgets = args.budgets or float_list(DEFAULT_BUDGETS[args.norm])
    if args.norm == "linf" and max(budgets) > 1:
        raise AdvlabError(f"Linf budgets must lie in [0, 1] (pixel scale), got {max(budgets):g}")
    data = dataset_split(args, "test")
    autoencoder, ae_meta = resolve_autoencoder(args.autoencoder, args, device)
    check_model_fits(ae_meta, data, args.autoencoder)
    classifier = None
    if (args.classifier or "").lower() != "none":
        spec = args.classifier or ("mnist_cnn" if args.dataset == "mnist" else "cifar_cnn")
        classifier, meta = resolve_model(spec, args, device)
        check_model_fits(meta, data, spec)
    if args.random_subset:
        data = data.subset(torch.randperm(len(data), generator=torch.Generator().manual_seed(args.seed)))
    x, y = (t.to(device) for t in data.head(args.n)[:])
    pool_x, pool_y = (t.to(device) for t in data.subset(slice(args.n, args.n + 1000))[:])
    config = {"autoencoder": args.autoencoder, "classifier": args.classifier, "dataset": args.dataset,
              "modes": modes, "norm": args.norm, "budgets": budgets, "steps": args.steps, "n": args.n,
              "penalty": args.penalty, "seed": args.seed, "random_subset": args.random_subset}
    with RunDir(args.out, "autoencoder-attack", config, overwrite=args.overwrite) as run_dir:
        label = f"{args.autoencoder} on {args.dataset} (test MSE {ae_meta.get('test_mse', float('nan')):.4f})"
        run_dir.metrics["autoencoder"] = sweep_section(run_dir, autoencoder, classifier, x, y, pool_x, pool_y, modes,
                                                       args.norm, budgets, args.steps, args.seed, label, args.penalty)
        out = run_dir.commit()
    for mode, rows in run_dir.metrics["autoencoder"]["sweep"].items():
        for r in rows:
            extra = f", read as target {r['target_class_rate']:.2f}" if "target_class_rate" in r else ""
            print(f"{mode} eps {r['eps']:g}: MSE to target {r['mse_to_target']:.4f} (noise "
                  f"{r['noise_mse_to_target']:.4f}), SSIM {r['ssim_to_target']:.3f} (noise "
                  f"{r['noise_ssim_to_target']:.3f}){extra}")
    print(f"report: {out / 'report.html'}")
    return 0


def demo_section(ctx) -> None:
    """Latent and output attacks on a small MNIST autoencoder; the demo model reads the results."""
    full = autoencoder_config("mnist")
    if cached_checkpoint_path(full, ctx.train_data, ctx.test_data).is_file():
        config = full
    elif ctx.quick:
        config = autoencoder_config("mnist", epochs=1, train_subset=2000, schedule="constant")
    else:
        config = autoencoder_config("mnist", epochs=2, train_subset=12000, schedule="constant")
    autoencoder, meta, _, _ = train_autoencoder(config, ctx.device, ctx.data_dir, progress=ctx.progress,
                                                train_data=ctx.train_data, test_data=ctx.test_data)
    n, steps, budgets = (4, 10, [0.1, 0.3]) if ctx.quick else (32, 60, [0.05, 0.1, 0.2, 0.3])
    x, y = (t.to(ctx.device) for t in ctx.test_data.head(n)[:])
    pool_x, pool_y = (t.to(ctx.device) for t in ctx.test_data.subset(slice(n, n + 200))[:])
    label = f"conv_autoencoder on MNIST ({config.epochs} epochs, test MSE {meta['test_mse']:.4f})"
    ctx.run.metrics["autoencoder"] = sweep_section(ctx.run, autoencoder, ctx.model, x, y, pool_x, pool_y,
                                                   ["latent", "output"], "linf", budgets, steps, 0, label)
