"""advlab certify: randomized-smoothing certificates (Cohen et al. 2019) for a checkpoint.

Run it under ``torchrun --standalone --nproc-per-node K -m advlab.cli.main -- certify ...`` to shard
the images over K processes (the ``--`` keeps torchrun from reading ``--n`` as one of its own
options); the results equal one process's for the same --seed.
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist

from advlab.cli.common import (
    add_data_args,
    add_device_arg,
    add_model_spec_args,
    add_out_arg,
    add_progress_arg,
    add_speed_args,
    check_model_fits,
    data_line,
    open_fraction,
    positive_float,
    positive_int,
    resolve_model,
    seed_int,
    speed_up,
)
from advlab.data import ImageDataset, load_dataset
from advlab.defenses.noise import noise_config, train_noise_model
from advlab.defenses.smoothing import Smooth, noise_batch_size
from advlab.errors import AdvlabError, check_range
from advlab.evaluation.certified import DEFAULT_RADII, CertificationResult, certify_dataset
from advlab.evaluation.records import RecordStore, data_sha256, model_hash, model_summary, recorded
from advlab.models.spec import spec_kind
from advlab.report.certify_figures import COHEN_CIFAR10, certified_accuracy_figure
from advlab.report.run import RunDir
from advlab.runtime import autocast, cache_dir, resolve_device

DEMO_ORDER = 50


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("certify", help="certified L2 radii by randomized smoothing",
                       description="Certify test images with the smoothed classifier of a checkpoint (Cohen et "
                       "al. 2019, CERTIFY): per image the prediction, the certified L2 radius or abstention, and "
                       "correctness; certified accuracy against radius as table, JSON and plot. Under torchrun the "
                       "images are sharded over the processes with the same results.")
    p.add_argument("checkpoint", metavar="MODEL", help="a .safetensors checkpoint (ideally noise-trained: advlab "
                   "defend --method noise) or any other model spec but an architecture name: timm:NAME, "
                   "PATH.py:FUNCTION, package.module:FUNCTION (runs your code), TorchScript, .onnx")
    add_model_spec_args(p)
    p.add_argument("--sigma", type=positive_float(), default=None,
                   help="noise level on the [0, 1] pixel scale (default: the sigma the checkpoint was trained at)")
    p.add_argument("--n0", type=positive_int, default=100, help="selection samples (default: %(default)s)")
    p.add_argument("--n", type=positive_int, default=100_000, help="estimation samples (default: %(default)s)")
    p.add_argument("--alpha", type=open_fraction, default=0.001, help="failure probability (default: %(default)s)")
    p.add_argument("--n-images", type=positive_int, default=500, help="images to certify (default: %(default)s)")
    p.add_argument("--skip", type=positive_int, default=1,
                   help="certify every SKIP-th test image (Cohen et al.: 20, i.e. 500 of CIFAR-10's 10,000)")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="noisy copies per forward pass (default: 1000 on a CPU; on a GPU the largest that fits)")
    p.add_argument("--seed", type=seed_int, default=0, help="noise seed (each image's noise derives from it)")
    add_data_args(p, dataset=None)
    add_device_arg(p)
    add_speed_args(p)
    add_out_arg(p)
    add_progress_arg(p)
    p.set_defaults(func=run)


def recipe_sigma(meta: dict) -> float | None:
    recipe = meta.get("recipe") or {}
    return recipe.get("sigma") if recipe.get("method") == "noise" else None


def certification_images(data: ImageDataset, n_images: int, skip: int) -> tuple[ImageDataset, list[int]]:
    ids = list(range(0, len(data), skip))[:n_images]
    return data.subset(torch.tensor(ids, dtype=torch.long)), ids


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


def init_distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) under torchrun (gloo: results are gathered as objects)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))
    return 0, 1, 0


def run(args: argparse.Namespace) -> int:
    rank, world, local_rank = init_distributed()
    try:
        return _run(args, rank, world, local_rank)
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _run(args: argparse.Namespace, rank: int, world: int, local_rank: int) -> int:
    device = resolve_device(args.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)
    if spec_kind(args.checkpoint) is None:
        raise AdvlabError(f"{args.checkpoint} is not a model file or spec; certify a trained model (advlab defend "
                          "--method noise --checkpoint FILE writes one)")
    model, meta = resolve_model(args.checkpoint, args, device)
    model = speed_up(model, args)
    trained_sigma = recipe_sigma(meta)
    sigma = args.sigma if args.sigma is not None else trained_sigma
    if sigma is None:
        raise AdvlabError(f"{args.checkpoint} was not noise-trained; give the noise level with --sigma")
    sigma = check_range(sigma, "--sigma", 0.0, 10.0, lo_open=True)
    alpha = check_range(args.alpha, "--alpha", 0.0, 0.5, lo_open=True)
    dataset = args.dataset or meta.get("dataset") or "mnist"
    full = load_dataset(dataset, "test", args.data_dir, args.image_size, args.channels)
    check_model_fits(meta, full, args.checkpoint)
    data, ids = certification_images(full, args.n_images, args.skip)
    if args.batch_size is None:
        args.batch_size = noise_batch_size(model, full.shape, device, ceiling=max(args.n, args.n0))
    config = {"checkpoint": str(args.checkpoint), "architecture": meta["architecture"], "dataset": dataset,
              "recipe": meta.get("recipe"), "sigma": sigma, "trained_sigma": trained_sigma, "n0": args.n0,
              "n": args.n, "alpha": alpha, "images": len(ids), "skip": args.skip, "seed": args.seed,
              "batch_size": args.batch_size, "device": str(device), "world_size": world,
              "torch_threads": torch.get_num_threads(), "data": data.describe(), "precision": args.precision}
    smooth = Smooth(model, meta["model_args"]["num_classes"], sigma)
    if rank != 0:  # workers certify their shard; rank 0 writes the run folder
        with autocast(device, args.precision):
            certify_dataset(smooth, data, args.n0, args.n, alpha, args.batch_size, args.seed, ids, device,
                            progress=False, state_dir=cache_dir() / "certify")
        return 0
    if trained_sigma is not None and abs(trained_sigma - sigma) > 1e-12:
        print(f"note: {args.checkpoint} was noise-trained at sigma {trained_sigma:g}, certifying at {sigma:g}")
    print(data_line(data))
    with RunDir(args.out, "certify", config, overwrite=args.overwrite) as run_dir:
        with autocast(device, args.precision):
            result = certify_dataset(smooth, data, args.n0, args.n, alpha, args.batch_size, args.seed, ids,
                                     device, progress=args.progress, state_dir=cache_dir() / "certify")
        label = f"{meta['architecture']} sigma={sigma:g}"
        add_certify_section(run_dir, [(label, result)], dataset, meta)
        run_dir.metrics = result.to_dict()
        write_records(run_dir.tmp / "certification.tsv", result)
        out = run_dir.commit()
    record_certification(args, meta, data, result, sigma, alpha, model)
    summary = result.summary()
    print(f"certified {len(result.records)} {dataset} images at sigma {sigma:g} (n0={args.n0}, n={args.n}, "
          f"alpha={alpha:g}) in {result.seconds:.1f} s ({result.images_per_second:.3f} images/s, "
          f"{world} process(es))")
    print("radius   " + "  ".join(f"{r:>5g}" for r in DEFAULT_RADII) + f"   (ceiling {result.ceiling:.3f})")
    print("cert.acc " + "  ".join(f"{summary['certified_accuracy'][f'{r:g}']:>5.3f}" for r in DEFAULT_RADII)
          + f"   abstain {summary['abstain_rate']:.3f}")
    print(f"run folder: {out}")
    return 0


def record_certification(args: argparse.Namespace, meta: dict, data: ImageDataset, result: CertificationResult,
                         sigma: float, alpha: float, model: torch.nn.Module) -> None:
    """Write the certificate into the evaluation records (advlab leaderboard shows it)."""
    settings = {"norm": "l2", "sigma": sigma, "n0": args.n0, "n": args.n, "alpha": alpha, "skip": args.skip,
                "images": len(data), "seed": args.seed, "batch_size": args.batch_size}
    summary = {k: v for k, v in result.summary().items() if k not in ("seconds", "images_per_second")}
    label = f"{meta['architecture']} ({(meta.get('recipe') or {}).get('method', 'standard')})"
    recorded(RecordStore(), model_hash(args.checkpoint, model), "certify", settings,
             data_sha256(data.images, data.labels), model_summary(meta, label, str(args.checkpoint)),
             lambda: {**summary, "seconds": result.seconds}, force=True)


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


def demo_section(ctx) -> None:
    """A noise-trained LeNet on the embedded MNIST, certified on a few dozen images at small n."""
    sigma = 0.25
    quick = ctx.quick
    config = noise_config("mnist", sigma, model="lenet", epochs=1 if quick else 2, lr=3e-3,
                          train_subset=3000 if quick else 20000)
    model, meta, path, cached = train_noise_model(config, ctx.device, ctx.data_dir, progress=ctx.progress,
                                                  train_data=ctx.train_data, test_data=ctx.test_data)
    n_images, n0, n = (10, 20, 200) if quick else (40, 100, 2000)
    smooth = Smooth(model, ctx.test_data.num_classes, sigma)
    result = certify_dataset(smooth, ctx.test_data.head(n_images), n0, n, 0.001, batch_size=1000, seed=0,
                             device=ctx.device, progress=ctx.progress)
    add_certify_section(ctx.run, [(f"lenet sigma={sigma:g}", result)], "mnist", meta, key="certify",
                        title="Certified robustness (randomized smoothing)")
    ctx.run.metrics["certify"] = {**result.summary(), "checkpoint": str(path), "cached": cached,
                                  "train_config": config.to_dict()}
