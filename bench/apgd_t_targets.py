"""Which target ranking lets APGD-T find a breakable image soonest? For every image APGD-CE leaves
unbroken, APGD-T (targeted DLR, 100 iterations) runs toward every wrong class in turn, each from its own
random start; then each ranking of the classes is scored by the position of the first class that broke the
image (docs/evaluation.md, "Which targets, from which starts").

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/apgd_t_targets.py --model CHECKPOINT --eps 0.3 --n 1000 \
        --out bench/results/targets/NAME.json

Rankings: ``clean`` (the clean logits, the authors' rule), ``apgd-ce`` (the logits at the point where
APGD-CE ended, advlab's fast schedule) and ``sum`` (the two added). Gradient calls are counted by APGD.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from advlab.attacks.apgd import APGD, targeted_dlr_loss
from advlab.attacks.base import Cost, ThreatModel
from advlab.data import load_dataset
from advlab.models import load_checkpoint


def starts(x: torch.Tensor, eps: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return ThreatModel("linf", eps).random_start(x, generator)


def first_break_positions(broke: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> list[int]:
    """Per image, the 1-based position in the ranking by `logits` of the first class that broke it (0: none)."""
    ranked = logits.scatter(1, y[:, None], float("-inf")).argsort(1, descending=True)[:, :-1]
    hits = broke.gather(1, ranked)
    return torch.where(hits.any(1), hits.float().argmax(1) + 1, torch.zeros_like(y)).tolist()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--eps", type=float, default=0.3)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    model, _ = load_checkpoint(args.model)
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    x, y = load_dataset(args.dataset, "test").tensors(args.n)
    with torch.no_grad():
        clean = model(x)
    idx = (clean.argmax(1) == y).nonzero().squeeze(1)
    cost = Cost()
    ce = APGD(eps=args.eps, steps=args.steps, loss="ce")
    adv, broken, _, used = ce.run(model, x[idx], y[idx], None, cost, start=starts(x, args.eps, 0)[idx])
    survivors = idx[~broken]
    with torch.no_grad():
        at_ce_end = model(adv[~broken])
    classes = clean.shape[1]
    broke = torch.zeros(len(survivors), classes, dtype=torch.bool)
    best_loss = torch.full((len(survivors), classes), float("nan"))
    targeted = APGD(eps=args.eps, steps=args.steps, loss="dlr")
    for c in range(classes):
        todo = (y[survivors] != c).nonzero().squeeze(1)
        rows, aim = survivors[todo], torch.full((len(todo),), c)
        a2, s2, _, _ = targeted.run(model, x[rows], y[rows], None, cost, starts(x, args.eps, 1000 + c)[rows], None,
                                    aim=aim)
        broke[todo, c] = s2
        with torch.no_grad():
            best_loss[todo, c] = targeted_dlr_loss(model(a2), y[rows], aim)
        print(f"class {c}: broke {int(s2.sum())} of {len(todo)}", flush=True)
    ys = y[survivors]
    rankings = {"clean": clean[survivors], "apgd-ce": at_ce_end, "sum": clean[survivors] + at_ce_end}
    out = {"model": args.model, "dataset": args.dataset, "eps": args.eps, "n": args.n, "steps": args.steps,
           "clean_correct": len(idx), "broken_by_apgd_ce": int(broken.sum()), "apgd_ce_gradient_calls": int(used.sum()),
           "survivors": survivors.tolist(), "breakable_by_some_class": int(broke.any(1).sum()),
           "broke": broke.int().tolist(), "best_targeted_dlr": best_loss.tolist(), "rankings": {}}
    for name, logits in rankings.items():
        pos = first_break_positions(broke, logits, ys)
        caught = {k: sum(1 for q in pos if 0 < q <= k) for k in range(1, classes)}
        out["rankings"][name] = {"first_break_position": pos, "breakable_within_top_k": caught}
        print(name, "breakable within the top k:", caught, flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
