"""advlab detect: run a backdoor detector on representations you bring (.npy feature matrix + labels);
the command behind `advlab.detection.files.detect_files`."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from advlab.cli.common import open_fraction, positive_int
from advlab.detection import DETECTORS
from advlab.detection.files import detect_files
from advlab.detection.spectre import MAX_K
from advlab.errors import AdvlabError
from advlab.runtime import atomic_write


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("detect", help="score and flag poisoned rows of a feature matrix (SPECTRE, spectral, "
                       "clustering)", description="Backdoor detection on your own representations: F.npy holds "
                       "an (n, d) feature matrix (one row per training image, e.g. a middle layer flattened), "
                       "L.npy the n training labels. Writes a score per row and the rows to remove.")
    p.add_argument("--features", required=True, help="(n, d) .npy feature matrix")
    p.add_argument("--labels", required=True, help="(n,) .npy integer labels")
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


def run(args: argparse.Namespace) -> int:
    check_destination(args.out)
    classes = None
    if args.classes:
        try:
            classes = [int(c) for c in args.classes.split(",")]
        except ValueError:
            raise AdvlabError(f"--classes must be comma-separated integers, got {args.classes!r}") from None
    payload = detect_files(args.method, args.features, args.labels, args.poison_fraction, args.m, classes, args.k,
                           args.max_k)
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
