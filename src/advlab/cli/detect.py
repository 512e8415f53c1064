"""advlab detect: run a backdoor detector on representations you bring (.npy feature matrix + labels);
the command behind `advlab.detection.files.detect_files`."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from advlab.cli.common import (
    BATCH_SIZE_HELP,
    MODEL_SPEC_HELP,
    add_data_args,
    add_device_arg,
    add_model_spec_args,
    check_model_fits,
    dataset_split,
    device_from,
    open_fraction,
    positive_int,
    record_batch_size,
    resolve_model,
    run_batch_size,
)
from advlab.detection import DETECTORS
from advlab.detection.files import check_budget, detect_arrays, detect_files
from advlab.detection.representations import PENULTIMATE, describe_layer, extract_features
from advlab.detection.spectre import MAX_K
from advlab.errors import AdvlabError
from advlab.runtime import atomic_write, gradient_batch_size


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("detect", help="score and flag poisoned rows of a feature matrix (SPECTRE, spectral, "
                       "clustering)", description="Backdoor detection on your own representations: F.npy holds "
                       "an (n, d) feature matrix (one row per training image, e.g. a middle layer flattened), "
                       "L.npy the n training labels. Writes a score per row and the rows to remove.")
    p.add_argument("--features", default=None, help="(n, d) .npy feature matrix")
    p.add_argument("--labels", default=None, help="(n,) .npy integer labels")
    p.add_argument("--model", default=None, help="instead of --features/--labels: take the representations of "
                   "--dataset's --split images at --layer of this model (any spec: " + MODEL_SPEC_HELP + ")")
    add_model_spec_args(p)
    add_data_args(p)
    p.add_argument("--split", choices=("train", "test"), default="train",
                   help="with --model: the split to scan (default: %(default)s)")
    p.add_argument("--n", type=positive_int, default=None, help="with --model: the first N images (default: all)")
    p.add_argument("--layer", default=PENULTIMATE, help="with --model: 'penultimate' (the input of the last linear "
                   "layer) or a layer name listed by advlab inspect (default: %(default)s)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="with --model: " + BATCH_SIZE_HELP)
    add_device_arg(p)
    p.add_argument("--method", choices=sorted(DETECTORS), default="spectre", help="detector (default: %(default)s)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--poison-fraction", type=open_fraction, default=None,
                        help="assumed poison share of each scanned class (m_y = fraction x n_y)")
    budget.add_argument("--m", type=positive_int, default=None, help="assumed number of poisons in each scanned class")
    p.add_argument("--classes", default=None, help="comma-separated labels to scan (default: all)")
    p.add_argument("--k", type=positive_int, default=None,
                   help="SPECTRE: fixed PCA dimension (default: chosen by op_k)")
    p.add_argument("--max-k", type=positive_int, default=MAX_K,
                   help="SPECTRE: cap on the k sweep (default: %(default)s)")
    p.add_argument("--out", required=True, help="scores.json to write")
    p.set_defaults(func=run)


def check_destination(path: str) -> None:
    """Refuse an --out that cannot become a file, before any work: a folder, or a path under a file."""
    out = Path(path)
    if out.is_dir():
        raise AdvlabError(f"--out {path} is a folder; name the scores file to write, e.g. {out / 'scores.json'}")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise AdvlabError(f"--out {path}: {parent} is a file, not a folder")
            try:  # a real probe: permissions alone do not tell (root, read-only mounts, /proc)
                fd, probe = tempfile.mkstemp(prefix=".advlab-probe-", dir=parent)
                os.close(fd)
                os.unlink(probe)
            except OSError as exc:
                raise AdvlabError(f"--out {path}: cannot write in {parent} ({exc.strerror})") from None
            break


def model_representations(args: argparse.Namespace):
    """Features of --dataset's --split images at --layer of --model, their labels, and what was used."""
    device = device_from(args)
    model, meta = resolve_model(args.model, args, device)
    data = dataset_split(args, args.split, args.n)
    check_model_fits(meta, data, args.model)
    layer = describe_layer(model, args.layer)
    print(f"representations: {len(data)} {args.split} images of {data.name}, {layer} of {args.model}")
    batch = run_batch_size(args, lambda: gradient_batch_size(model, data.shape, device, cpu_default=500), device)
    features = extract_features(model, data, args.layer, batch, device=device, progress=True)
    record_batch_size(None, batch)
    return features, data.labels.numpy(), {"model": args.model, "dataset": args.dataset, "split": args.split,
                                           "layer": args.layer, "layer_description": layer,
                                           "fingerprint": data.fingerprint, **batch.summary()}


def run(args: argparse.Namespace) -> int:
    check_destination(args.out)
    classes = None
    if args.classes:
        try:
            classes = [int(c) for c in args.classes.split(",")]
        except ValueError:
            raise AdvlabError(f"--classes must be comma-separated integers, got {args.classes!r}") from None
    if args.model:
        if args.features or args.labels:
            raise AdvlabError("give either --model (representations taken here) or --features and --labels")
        check_budget(args.method, args.poison_fraction, args.m)
        features, labels, source = model_representations(args)
        payload = detect_arrays(args.method, features, labels, args.poison_fraction, args.m, classes, args.k,
                                args.max_k, source)
    elif not (args.features and args.labels):
        raise AdvlabError("give --features and --labels (.npy files), or --model with --dataset and --layer")
    else:
        payload = detect_files(args.method, args.features, args.labels, args.poison_fraction, args.m, classes,
                               args.k, args.max_k)
    try:
        atomic_write(args.out, lambda tmp: tmp.write_text(json.dumps(payload, indent=1) + "\n"))
    except OSError as exc:
        raise AdvlabError(f"could not write --out {args.out} ({exc.strerror or exc})") from None
    lines = [f"{args.method}: removed {payload['removed_count']} of {payload['n']} rows"]
    for c, info in payload["per_class"].items():
        extra = f", k = {info['k']}" if "k" in info else ""
        extra += f", silhouette {info['silhouette']:.3f}, flagged {info['flagged']}" if "silhouette" in info else ""
        lines.append(f"  class {c}: {info['removed']} of {info['n']} removed{extra}")
    print("\n".join(lines) + f"\nscores: {args.out}")
    return 0
