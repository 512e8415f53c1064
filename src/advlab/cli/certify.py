"""advlab certify: randomized-smoothing certificates (Cohen et al. 2019) for a checkpoint.

Run it under ``torchrun --standalone --nproc-per-node K -m advlab.cli.main -- certify ...`` to shard
the images over K processes (the ``--`` keeps torchrun from reading ``--n`` as one of its own
options); the results equal one process's for the same --seed.
"""

from __future__ import annotations

import argparse

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
    data_options,
    open_fraction,
    positive_float,
    positive_int,
    record_batch_size,
    resolve_model,
    run_batch_size,
    seed_int,
    speed_up,
)
from advlab.data import load_dataset
from advlab.defenses.smoothing import noise_batch_size
from advlab.errors import AdvlabError
from advlab.evaluation.certified import DEFAULT_RADII
from advlab.evaluation.certify_run import CertifySettings, certify_images, init_distributed, record_certification
from advlab.models.spec import spec_kind
from advlab.report.run import RunDir
from advlab.report.sections import add_certify_section, write_records
from advlab.runtime import autocast, resolve_device


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
                   help="noisy copies per forward pass (default: 1000 on a CPU; on a GPU the largest that fits). A "
                   "batch that runs out of memory is drawn again at half the size, also when given; the size used "
                   "is reported")
    p.add_argument("--seed", type=seed_int, default=0, help="noise seed (each image's noise derives from it)")
    add_data_args(p, dataset=None)
    add_device_arg(p)
    add_speed_args(p)
    add_out_arg(p)
    add_progress_arg(p)
    p.set_defaults(func=run)


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
    plan = CertifySettings(args.sigma, args.n0, args.n, args.alpha, args.n_images, args.skip,
                           args.seed).plan(meta, args.checkpoint)
    dataset = args.dataset or meta.get("dataset") or "mnist"
    full = load_dataset(dataset, "test", args.data_dir, **data_options(args))
    check_model_fits(meta, full, args.checkpoint)
    data, ids = plan.images(full)
    batch = run_batch_size(args, lambda: noise_batch_size(model, full.shape, device, ceiling=max(args.n, args.n0)),
                           device)
    batch_size = batch.start  # the records' key: the size asked for
    config = {"checkpoint": str(args.checkpoint), "architecture": meta["architecture"], "dataset": dataset,
              "recipe": meta.get("recipe"), "sigma": plan.sigma, "trained_sigma": plan.trained_sigma, "n0": args.n0,
              "n": args.n, "alpha": plan.alpha, "images": len(ids), "skip": args.skip, "seed": args.seed,
              "batch_size": batch_size, "device": str(device), "world_size": world,
              "torch_threads": torch.get_num_threads(), "data": data.describe(), "precision": args.precision}
    if rank != 0:  # workers certify their shard; rank 0 writes the run folder
        with autocast(device, args.precision):
            certify_images(model, plan, data, ids, batch, device, progress=False)
        return 0
    if plan.trained_sigma is not None and abs(plan.trained_sigma - plan.sigma) > 1e-12:
        print(f"note: {args.checkpoint} was noise-trained at sigma {plan.trained_sigma:g}, certifying at "
              f"{plan.sigma:g}")
    print(data_line(data))
    with RunDir(args.out, "certify", config, overwrite=args.overwrite) as run_dir:
        with autocast(device, args.precision):
            result = certify_images(model, plan, data, ids, batch, device, progress=args.progress)
        add_certify_section(run_dir, [(f"{meta['architecture']} sigma={plan.sigma:g}", result)], dataset, meta)
        run_dir.metrics = result.to_dict()
        record_batch_size(run_dir, batch)
        write_records(run_dir.tmp / "certification.tsv", result)
        out = run_dir.commit()
    record_certification(args.checkpoint, meta, data, result, plan, batch_size, model)
    summary = result.summary()
    print(f"certified {len(result.records)} {dataset} images at sigma {plan.sigma:g} (n0={args.n0}, n={args.n}, "
          f"alpha={plan.alpha:g}) in {result.seconds:.1f} s ({result.images_per_second:.3f} images/s, "
          f"{world} process(es))")
    print("radius   " + "  ".join(f"{r:>5g}" for r in DEFAULT_RADII) + f"   (ceiling {result.ceiling:.3f})")
    print("cert.acc " + "  ".join(f"{summary['certified_accuracy'][f'{r:g}']:>5.3f}" for r in DEFAULT_RADII)
          + f"   abstain {summary['abstain_rate']:.3f}")
    print(f"run folder: {out}")
    return 0


