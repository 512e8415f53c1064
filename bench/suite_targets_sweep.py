"""APGD-CE + APGD-T of the standard suite under several target settings, on the same images: robust
samples and gradient calls per setting, to set beside an official AutoAttack run's verdicts
(docs/evaluation.md, "Which targets, from which starts").

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/suite_targets_sweep.py --model CHECKPOINT --eps 0.3 --n 1000 \
        --settings 3:apgd-ce:0,5:clean:0 [--autoattack-from FILE] --out bench/results/targets/NAME.json

A setting is TARGETS:RANKING:SEED (RANKING: apgd-ce or clean; SuiteConfig.rank_targets).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from advlab.data import load_dataset
from advlab.evaluation.suite import SuiteConfig, run_suite
from advlab.models import load_checkpoint


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--eps", type=float, default=0.3)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--settings", required=True)
    p.add_argument("--autoattack-from", default=None, help="a bench/autoattack_compare.py result on the same images")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    model, _ = load_checkpoint(args.model)
    model.eval()
    x, y = load_dataset(args.dataset, "test").tensors(args.n)
    reference = None
    if args.autoattack_from:
        earlier = json.loads(Path(args.autoattack_from).read_text())
        if earlier["n"] != args.n or earlier["eps"] != args.eps:
            raise SystemExit(f"{args.autoattack_from} is not a run on the same images and eps")
        reference = {"robust_samples": earlier["autoattack"]["robust_samples"],
                     "gradient_calls": earlier["autoattack"]["gradient_calls"]}
    out = {"model": args.model, "eps": args.eps, "n": args.n, "autoattack": reference, "settings": {}}
    for spec in args.settings.split(","):
        targets, ranking, seed = spec.split(":")
        cfg = SuiteConfig(targets=int(targets), rank_targets=ranking, seed=int(seed))
        start = time.process_time()
        ev = run_suite(model, x, y, [args.eps], members=["apgd-ce", "apgd-t"], config=cfg, progress=False,
                       diagnostics=False)
        robust = (ev.broken_eps > args.eps).nonzero().squeeze(1).tolist()
        calls = {k: v["backward"] for k, v in ev.to_dict()["cost"].items()}
        row = {"robust_accuracy": len(robust) / args.n, "robust_samples": robust, "gradient_calls": calls,
               "cpu_seconds": time.process_time() - start, "broken_by_target_rank": ev.broken_by_target_rank()}
        if reference:
            theirs = set(reference["robust_samples"])
            row["broken_only_by_autoattack"] = len(set(robust) - theirs)
            row["broken_only_by_advlab"] = len(theirs - set(robust))
            row["gradient_call_ratio"] = sum(calls.values()) / reference["gradient_calls"]
        out["settings"][spec] = row
        print(spec, json.dumps({k: v for k, v in row.items() if k != "robust_samples"}), flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
