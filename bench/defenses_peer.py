"""Confirm advlab evaluate's robust accuracies with a peer's PGD (torchattacks) on the same
checkpoints and the same test images.

    PYTHONPATH=src .venv-peers/bin/python bench/defenses_peer.py bench/results/defenses/*.json \
        --out bench/results/defenses_peer.json

Reads the JSON files `advlab evaluate --json` wrote (checkpoints, eps, n, steps, restarts), runs
torchattacks.PGD with the same eps, steps, step size (2.5 * eps / steps) and random restarts (each
restart attacks the samples still classified correctly, so a sample counts as robust only if every
restart failed), measures success with its own forward pass, and sets the figures side by side.
A robustness figure is easy to overstate with a subtly weak attack; advlab's PGD and worst case
must not exceed the peer's PGD by more than one point.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from advlab.data import load_dataset  # noqa: E402
from advlab.models import load_checkpoint  # noqa: E402


def peer_pgd_accuracy(model, x, y, eps, steps, restarts, batch_size=500, seed=0) -> float:
    import torchattacks

    alive = torch.ones(len(x), dtype=torch.bool)
    with torch.no_grad():
        alive &= torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)]) == y
    attack = torchattacks.PGD(model, eps=eps, alpha=2.5 * eps / steps, steps=steps, random_start=True)
    for restart in range(restarts):
        idx = alive.nonzero().squeeze(1)
        if len(idx) == 0:
            break
        torch.manual_seed(seed + restart)
        for i in range(0, len(idx), batch_size):
            b = idx[i:i + batch_size]
            adv = attack(x[b], y[b])
            with torch.no_grad():
                alive[b] = model(adv).argmax(1) == y[b]
    return alive.float().mean().item()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("evaluations", nargs="+", help="JSON files advlab evaluate --json wrote")
    parser.add_argument("--data-dir", default=os.environ.get("ADVLAB_DATA", "../shared/data"))
    parser.add_argument("--out", default=None)
    parser.add_argument("--restarts", type=int, default=None,
                        help="override the evaluation's restart count (fewer restarts: a weaker peer figure, so an "
                        "easier check; used where every restart runs all its steps, e.g. a masked model)")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    rows, ok, configs = [], True, []
    for file in args.evaluations:
        report = json.loads(Path(file).read_text())
        config = report["config"]
        configs.append(config)
        data = load_dataset(config["dataset"], "test", args.data_dir).head(config["n"])
        x, y = data.tensors()
        for spec, ev in report["evaluations"].items():
            model, _ = load_checkpoint(spec)
            model.eval()
            for p in model.parameters():
                p.requires_grad_(False)
            for i, eps in enumerate(ev["eps"]):
                start = time.perf_counter()
                restarts = args.restarts or config["restarts"]
                peer = peer_pgd_accuracy(model, x, y, eps, config["steps"], restarts, seed=config["seed"])
                ours, worst = ev["robust_accuracy"]["pgd"][i], ev["worst_case"][i]
                within = max(ours, worst) <= peer + 0.01
                ok &= within
                rows.append({"model": ev["label"], "checkpoint": spec, "n": config["n"], "eps": eps,
                             "steps": config["steps"], "restarts": restarts, "advlab_pgd": ours,
                             "advlab_worst_case": worst, "torchattacks_pgd": peer, "within_one_point": within,
                             "seconds": time.perf_counter() - start})
                print(f"{ev['label']:<40} eps {eps:<4g} advlab PGD {ours:.4f}  worst case {worst:.4f}  "
                      f"torchattacks PGD {peer:.4f}  {'ok' if within else 'ADVLAB ABOVE PEER BY > 1 POINT'}",
                      flush=True)
    import torchattacks

    result = {"configs": configs, "torchattacks": torchattacks.__version__, "torch": torch.__version__,
              "rows": rows, "all_within_one_point": ok}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
