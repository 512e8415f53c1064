"""advlab's APGD-CE against torchattacks' APGD at equal iterations, over several seeds, on the same
model and tensors (docs/evaluation.md).

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv-peers/bin/python bench/apgd_vs_torchattacks.py \
        --model CHECKPOINT --eps 0.1 --n 100 --seeds 0,1,2,3,4 --out bench/results/FILE.json

One random start per run (n_restarts=1 for torchattacks, restarts=1 for advlab), 100 iterations, the
cross-entropy. Per seed: robust accuracy of each, and the images one broke and the other did not; over
the seeds: how often each image was broken by each library, so that a difference of an image or two
can be told apart from the random start's lottery.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from advlab.attacks.apgd import APGD
from advlab.data import load_dataset
from advlab.models import load_checkpoint


def predict(model, x, bs=500):
    with torch.no_grad():
        return torch.cat([model(x[i:i + bs]).argmax(1) for i in range(0, len(x), bs)])


def main() -> None:
    import torchattacks

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--norm", default="linf", choices=("linf", "l2"))
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--bs", type=int, default=250)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    model, meta = load_checkpoint(args.model)
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    x, y = load_dataset(args.dataset, "test").tensors(args.n)
    runs = []
    ours_broken = torch.zeros(args.n)
    theirs_broken = torch.zeros(args.n)
    for seed in [int(s) for s in args.seeds.split(",")]:
        t0 = time.process_time()
        adv = torch.cat([APGD(eps=args.eps, norm=args.norm, steps=args.steps, loss="ce", seed=seed)(
            model, x[i:i + args.bs], y[i:i + args.bs]).adv for i in range(0, args.n, args.bs)])
        t1 = time.process_time()
        torch.manual_seed(seed)
        ta = torchattacks.APGD(model, norm="Linf" if args.norm == "linf" else "L2", eps=args.eps, steps=args.steps,
                               n_restarts=1, loss="ce", seed=seed)
        adv_ta = torch.cat([ta(x[i:i + args.bs], y[i:i + args.bs]) for i in range(0, args.n, args.bs)])
        t2 = time.process_time()
        ours = predict(model, adv) == y
        theirs = predict(model, adv_ta) == y
        ours_broken += (~ours).float()
        theirs_broken += (~theirs).float()
        runs.append({"seed": seed, "advlab": ours.float().mean().item(), "torchattacks": theirs.float().mean().item(),
                     "broken_by_advlab_only": (~ours & theirs).nonzero().squeeze(1).tolist(),
                     "broken_by_torchattacks_only": (ours & ~theirs).nonzero().squeeze(1).tolist(),
                     "advlab_cpu": t1 - t0, "torchattacks_cpu": t2 - t1})
        print(json.dumps(runs[-1]), flush=True)
    k = len(runs)
    differ = (ours_broken != theirs_broken).nonzero().squeeze(1).tolist()
    out = {"model": args.model, "recipe": meta.get("recipe"), "dataset": args.dataset, "eps": args.eps,
           "norm": args.norm, "n": args.n, "steps": args.steps, "runs": runs,
           "mean_advlab": sum(r["advlab"] for r in runs) / k,
           "mean_torchattacks": sum(r["torchattacks"] for r in runs) / k,
           "runs_breaking_each_differing_image": {
               str(i): {"advlab": int(ours_broken[i]), "torchattacks": int(theirs_broken[i])} for i in differ}}
    print("mean", out["mean_advlab"], out["mean_torchattacks"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
