"""advlab's HopSkipJump under several settings on the same images, labels only, through one in-process
oracle each: success within budgets and the median queries of the successes.

    PYTHONPATH=src OMP_NUM_THREADS=1 .venv/bin/python bench/hsj_settings.py --checkpoint CHECKPOINT \
        --dataset cifar10 --data-dir ../shared/data --eps 8/255 --n 100 --queries 10000 --settings 1:0,8:0.1

Each setting is EPS_PROBES_PER_ITERATION:FIRST_PROBE_RADIUS (1:0 is HopSkipJump before the eight eps
probes per iteration and the authors' first radius; 8:0.1 is today's default).
"""

from __future__ import annotations

import argparse
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from advlab.attacks.blackbox import HopSkipJump, LocalOracle  # noqa: E402
from advlab.data import load_dataset  # noqa: E402
from advlab.models import load_checkpoint  # noqa: E402

BUDGETS = (100, 500, 1000, 2500, 5000, 10_000)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--eps", default="0.3", help="Linf eps, a number or a fraction such as 8/255")
    p.add_argument("--n", type=int, default=100, help="the first N test images")
    p.add_argument("--queries", type=int, default=10_000)
    p.add_argument("--settings", default="1:0,8:0.1")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    eps = float(Fraction(args.eps))
    model, _ = load_checkpoint(args.checkpoint)
    model.eval()
    x, y = load_dataset(args.dataset, "test", args.data_dir).head(args.n).tensors()
    print(f"| eps probes per iteration, first radius | correct | success within {' / '.join(map(str, BUDGETS))} "
          "queries | median queries of the successes |\n| --- | --- | --- | --- |")
    for setting in args.settings.split(","):
        per_iteration, radius = setting.split(":")
        attack = HopSkipJump(eps=eps, max_queries=args.queries, eps_probes_per_iteration=int(per_iteration),
                             first_probe_radius=float(radius), seed=args.seed)
        result = attack(LocalOracle(model, labels_only=True), x, y)
        ok = result.clean_correct.cpu().numpy()
        at = result.extra["queries_at_success"].cpu().numpy()[ok]
        cells = " / ".join(f"{((at > 0) & (at <= q)).mean():.3f}" for q in BUDGETS if q <= args.queries)
        median = float(np.median(at[at > 0])) if (at > 0).any() else float("nan")
        print(f"| {per_iteration}, {radius} | {int(ok.sum())} | {cells} | {median:g} |", flush=True)


if __name__ == "__main__":
    main()
