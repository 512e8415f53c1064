"""Variants of advlab's rand suite on a noise-wrapped model, each judged by the rules of
bench/autoattack_compare.py (one fresh draw per returned image, accuracy averaged over 20 fresh draws,
logits averaged over 20 draws) and set beside the official AutoAttack's rand version saved by that script.

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv-peers/bin/python bench/rand_variants.py \
        --model bench/checkpoints/noise_mnist.safetensors --eps 0.1 --n 50 --noise-sigma 0.3 \
        --autoattack-from bench/results/table/noise_mnist.json --variants eot5-confirm5 \
        --out bench/results/rand/variants.json

A variant is NAME = a SuiteConfig override set and the members (VARIANTS below). Gradient calls and
forward-only passes are counted by the same wrapper as in autoattack_compare.py; CPU seconds are of this
process, one thread.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from advlab.data import load_dataset  # noqa: E402
from advlab.evaluation.suite import SuiteConfig, run_suite  # noqa: E402
from advlab.models import load_checkpoint  # noqa: E402
from autoattack_compare import Counter, NoisyModel, predict, randomized_verdicts  # noqa: E402

MEMBERS = {"both": ("apgd-ce", "apgd-dlr"), "ce": ("apgd-ce",), "dlr": ("apgd-dlr",)}


def variant(name: str) -> tuple[dict, tuple[str, ...]]:
    """NAME -> (SuiteConfig overrides, members). "before": the suite as it was (EOT 20, first crossing,
    one-draw verdict); "eot{K}-{both|ce|dlr}-confirm{C}": EOT over K draws, the members, a sample leaves
    after C steps in a row misclassified by the averaged logits (C larger than the steps: never early),
    verdict by the logits averaged over 20 fresh draws; "-best": the returned image of a sample that stays
    robust is the attack's most damaging point, not the clean image (SuiteConfig.keep_best_point)."""
    if name == "before":
        return {"eot": 20, "confirm": 1, "verdict_draws": 0, "keep_best_point": False}, MEMBERS["both"]
    try:
        eot, members, confirm, *best = name.split("-")
        if best not in ([], ["best"]):
            raise ValueError(name)
        return {"eot": int(eot.removeprefix("eot")), "confirm": int(confirm.removeprefix("confirm")),
                "keep_best_point": bool(best)}, MEMBERS[members]
    except (ValueError, KeyError):
        raise SystemExit(f"unknown variant {name!r}: before, or eot{{K}}-{{both|ce|dlr}}-confirm{{C}}[-best]") from None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--n", type=int, default=50, help="first N test images")
    p.add_argument("--noise-sigma", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--variants", required=True, help="comma-separated names (variant())")
    p.add_argument("--autoattack-from", default=None, metavar="JSON",
                   help="an output of bench/autoattack_compare.py with the official AutoAttack's rand version")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    model, _ = load_checkpoint(args.model)
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    counter = Counter(NoisyModel(model, args.noise_sigma).eval()).eval()
    x, y = load_dataset(args.dataset, "test").tensors(args.n)
    out = {"model": args.model, "eps": args.eps, "n": args.n, "noise_sigma": args.noise_sigma, "seed": args.seed,
           "steps": args.steps, "variants": {}}
    aa = None
    if args.autoattack_from:
        earlier = json.loads(Path(args.autoattack_from).read_text())
        if any(earlier.get(k) != out[k] for k in ("eps", "n", "noise_sigma", "seed")) or "autoattack" not in earlier:
            raise SystemExit(f"{args.autoattack_from} is not an AutoAttack run on the same images and settings")
        aa = earlier["autoattack"]
        out["autoattack"] = {k: aa[k] for k in ("robust_accuracy", "expected_accuracy_20_draws",
                                                "averaged_logits_accuracy_20_draws", "gradient_calls", "cpu_seconds")
                             if k in aa}
        print("autoattack", json.dumps(out["autoattack"]), flush=True)
    if Path(args.out).exists():
        out["variants"] = json.loads(Path(args.out).read_text()).get("variants", {})
    for name in args.variants.split(","):
        overrides, members = variant(name)
        torch.manual_seed(args.seed)
        counter.reset()
        cfg = SuiteConfig(steps=args.steps, seed=args.seed, **overrides)
        start = time.process_time()
        ev = run_suite(counter, x, y, [args.eps], "linf", "rand", members=list(members), config=cfg, batch_size=250,
                       progress=False, diagnostics=False, keep_adversarial=True)
        cpu = time.process_time() - start
        adv = ev.adversarial
        assert float((adv - x).abs().amax()) <= args.eps * (1 + 1e-5) + 1e-6
        row = {"config": cfg.to_dict(), "members": list(members),
               "one_draw_accuracy": (predict(counter.model, adv) == y).float().mean().item(),
               **randomized_verdicts(counter.model, adv, y),
               "robust_accuracy_by_records": ev.robust_accuracy()[0],
               "gradient_calls": sum(counter.grad.values()), "forward_only": sum(counter.plain.values()),
               "cpu_seconds": cpu, "broken_by_count": ev.to_dict()["broken_by_count"],
               "robust_samples_by_records": (ev.broken_eps > args.eps).nonzero().squeeze(1).tolist()}
        if aa is not None:
            row["gradient_calls_over_autoattack"] = row["gradient_calls"] / aa["gradient_calls"]
            row["cpu_over_autoattack"] = cpu / aa["cpu_seconds"]
        out["variants"][name] = row
        print(name, json.dumps({k: v for k, v in row.items() if k not in ("config", "robust_samples_by_records")}),
              flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
