"""Query efficiency of advlab's Square Attack and HopSkipJump against IBM ART's, side by side.

    PYTHONPATH=src OMP_NUM_THREADS=1 .venv-peers/bin/python bench/blackbox_peers.py \
        --checkpoint CHECKPOINT --name standard --n 30 --square-queries 1000 --hsj-queries 1000 \
        --out bench/results/blackbox_peers/standard.json

Runs in the bench-only peers environment (ART next to the same torch; `safetensors` added so that
advlab's checkpoints load). Both libraries attack the same model, the same MNIST test images, at
the same per-image query budget, one image at a time, and every query of both goes through the
same counting wrapper around the model (`CountingModel`): it records, per query, whether the
queried point is misclassified and its Linf distance to the clean image, and stops the attack
once the budget is spent. From that record, identically for both libraries:

- success within q queries: the first misclassified query point within Linf eps (the rule advlab's
  QueryRun applies; ART's own success flag is not used);
- HopSkipJump's distance against queries: the smallest Linf distance of a misclassified point
  queried so far;
- median queries of the successes.

advlab's attacks run as its users run them, at eps: they stop at the first success. ART's
HopSkipJump has no eps for Linf and minimizes the distance until the budget is spent; its first
crossing of eps is read from the record. advlab's HopSkipJump distance curve comes from a second
run at a tiny eps (--tiny-eps) without eps probes, which keeps it minimizing. A white-box PGD-100 on the same images
is the reference.

ART's attacks have no per-image query limit, so they get more iterations than the budget allows
and the wrapper ends them when the budget is spent (the `QueryBudgetSpent` exception).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from advlab.attacks.blackbox import BudgetExhausted, HopSkipJump, LocalOracle, Square  # noqa: E402
from advlab.models import load_checkpoint  # noqa: E402


class QueryBudgetSpent(Exception):  # noqa: N818
    pass


class CountingModel(nn.Module):
    """The model behind a per-image query counter: every row of every forward pass is one query."""

    def __init__(self, model: nn.Module, budget: int) -> None:
        super().__init__()
        self.model, self.budget = model, budget
        self.reset(None, -1)

    def reset(self, x0: torch.Tensor | None, label: int) -> None:
        self.x0, self.label = x0, label
        self.adv_dist: list[float] = []  # per query: Linf distance if misclassified, else inf

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if len(self.adv_dist) + len(x) > self.budget:
            take = self.budget - len(self.adv_dist)
            if take > 0:
                self._record(x[:take])
            raise QueryBudgetSpent
        return self._record(x)

    def _record(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            logits = self.model(x)
        if self.x0 is not None:
            dist = (x - self.x0).flatten(1).abs().amax(1)
            wrong = logits.argmax(1) != self.label
            self.adv_dist.extend(torch.where(wrong, dist, torch.full_like(dist, math.inf)).tolist())
        return logits


def mnist_test(data_dir: Path, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n MNIST test images straight from the IDX files (the peers env has no Pillow)."""
    with gzip.open(data_dir / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)[:n]
    with gzip.open(data_dir / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)[:n]
    return torch.from_numpy(images.astype(np.float32) / 255), torch.from_numpy(labels.astype(np.int64))


def run_advlab(attack_name: str, counting: CountingModel, x: torch.Tensor, y: torch.Tensor, args, seed: int,
               hsj_eps: float | None = None) -> None:
    oracle = LocalOracle(counting, labels_only=attack_name == "hopskipjump", budget=counting.budget)
    if attack_name == "square":
        attack = Square(eps=args.eps, max_queries=counting.budget, p_init=args.p_init, seed=seed)
    else:
        # the distance run (hsj_eps) minimizes: eps probes at a tiny eps cannot succeed, so it runs without them
        attack = HopSkipJump(eps=args.eps if hsj_eps is None else hsj_eps, max_queries=counting.budget,
                             init_evals=args.init_evals, max_evals=args.max_evals, gamma=args.gamma,
                             eps_probe=not args.no_eps_probe and hsj_eps is None,
                             eps_probes_per_iteration=args.eps_probes_per_iteration,
                             first_probe_radius=args.first_probe_radius, seed=seed)
    try:
        attack(oracle, x, y)
    except (BudgetExhausted, QueryBudgetSpent):
        pass


def art_classifier(counting: CountingModel):
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(model=counting, loss=nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=10,
                             clip_values=(0.0, 1.0), device_type="cpu")


def run_art(attack_name: str, counting: CountingModel, x: torch.Tensor, y: torch.Tensor, args, seed: int) -> None:
    from art.attacks.evasion import HopSkipJump as ArtHSJ
    from art.attacks.evasion import SquareAttack as ArtSquare

    np.random.seed(seed)
    classifier = art_classifier(counting)
    if attack_name == "square":
        attack = ArtSquare(classifier, norm=np.inf, eps=args.eps, max_iter=counting.budget, p_init=args.p_init,
                           nb_restarts=1, batch_size=1, verbose=False)
    else:
        attack = ArtHSJ(classifier, norm=np.inf, max_iter=10_000, init_eval=args.init_evals,
                        max_eval=args.max_evals, init_size=100, batch_size=64, verbose=False)
    try:
        attack.generate(x.numpy(), y=np.eye(10, dtype=np.float32)[y.numpy()])
    except QueryBudgetSpent:
        pass


def per_image(attack_name: str, library: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, args,
              seed: int, hsj_eps: float | None = None) -> dict:
    counting = CountingModel(model, args.budget[attack_name])
    records = []
    start = time.perf_counter()
    for i in range(len(x)):
        counting.reset(x[i:i + 1], int(y[i]))
        if library == "advlab":
            run_advlab(attack_name, counting, x[i:i + 1], y[i:i + 1], args, seed, hsj_eps)
        else:
            run_art(attack_name, counting, x[i:i + 1], y[i:i + 1], args, seed)
        records.append(counting.adv_dist)
    return {"records": records, "seconds": time.perf_counter() - start}


def summarize(records: list[list[float]], budget: int, eps: float, grid: list[int]) -> dict:
    """Success rate at each budget of the grid, median queries of the successes, median distance."""
    first = []
    best = np.full((len(records), budget), math.inf)
    for k, rec in enumerate(records):
        d = np.asarray(rec + [math.inf] * (budget - len(rec)))[:budget]
        best[k] = np.minimum.accumulate(d)
        hit = np.nonzero(d <= eps * (1 + 1e-6) + 1e-7)[0]
        first.append(int(hit[0]) + 1 if len(hit) else -1)
    first = np.asarray(first)
    ok = first > 0
    return {"success_rate": float(ok.mean()),
            "median_queries": float(np.median(first[ok])) if ok.any() else None,
            "queries_used": [len(r) for r in records],
            "first_success": first.tolist(),
            "success_at": {str(q): float(((first > 0) & (first <= q)).mean()) for q in grid},
            "median_distance_at": {str(q): float(np.median(best[:, q - 1])) for q in grid}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--name", required=True, help="label of the model in the output")
    shared_data = Path(__file__).resolve().parents[2] / "shared" / "data"
    p.add_argument("--data-dir", default=os.environ.get("ADVLAB_DATA", str(shared_data)))
    p.add_argument("--n", type=int, default=30, help="first N test images the model classifies correctly")
    p.add_argument("--offset", type=int, default=0, help="skip the first OFFSET test images")
    p.add_argument("--eps", type=float, default=0.3)
    p.add_argument("--tiny-eps", type=float, default=1e-3, help="HopSkipJump's own eps (keeps it minimizing)")
    p.add_argument("--p-init", type=float, default=0.3)
    p.add_argument("--square-queries", type=int, default=1000)
    p.add_argument("--hsj-queries", type=int, default=1000)
    p.add_argument("--init-evals", type=int, default=100)
    p.add_argument("--max-evals", type=int, default=1000)
    p.add_argument("--gamma", type=float, default=None, help="advlab HopSkipJump's gamma (default: its own)")
    p.add_argument("--no-eps-probe", action="store_true",
                   help="advlab HopSkipJump without its one query per iteration at x + eps sign(gradient estimate)")
    p.add_argument("--eps-probes-per-iteration", type=int, default=None,
                   help="advlab HopSkipJump's eps probes per iteration (default: its own)")
    p.add_argument("--first-probe-radius", type=float, default=None,
                   help="advlab HopSkipJump's probe radius in the first iteration (default: its own; 0: the paper's)")
    p.add_argument("--no-distance-run", action="store_true",
                   help="skip advlab HopSkipJump's second run at --tiny-eps (its distance curve is then not measured)")
    p.add_argument("--libraries", default="advlab,art")
    p.add_argument("--attacks", default="square,hopskipjump")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (each library, each seed)")
    p.add_argument("--merge", default=None,
                   help="earlier outputs on the same model and images (comma-separated): their results for the "
                   "attack/library pairs not run now are kept")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    args.budget = {"square": args.square_queries, "hopskipjump": args.hsj_queries}
    defaults = HopSkipJump()
    if args.gamma is None:
        args.gamma = defaults.gamma
    if args.eps_probes_per_iteration is None:
        args.eps_probes_per_iteration = defaults.eps_probes_per_iteration
    if args.first_probe_radius is None:
        args.first_probe_radius = defaults.first_probe_radius
    model, meta = load_checkpoint(args.checkpoint)
    model.eval()
    x, y = mnist_test(Path(args.data_dir) / "mnist", args.offset + 4 * args.n)
    x, y = x[args.offset:], y[args.offset:]
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    x, y = x[correct][:args.n], y[correct][:args.n]
    from advlab.attacks import PGD

    # the white-box reference on the same images: PGD-100 (step 2.5 eps/100, cross-entropy, seeded random start)
    whitebox = PGD(eps=args.eps, steps=100, step_size=2.5 * args.eps / 100, norm="linf", seed=0)(model, x, y)
    print(f"{args.name}: white-box PGD-100 success {float(whitebox.success.float().mean()):.3f} on {len(x)} images",
          flush=True)
    out = {"model": args.name, "checkpoint": str(args.checkpoint).replace(str(Path.home()), "~", 1),  # no machine path
           "test_accuracy": meta.get("test_accuracy"),
           "images": len(x), "offset": args.offset, "eps": args.eps, "p_init": args.p_init,
           "whitebox_pgd100_success": float(whitebox.success.float().mean()),
           "init_evals": args.init_evals, "max_evals": args.max_evals,
           "advlab_gamma": args.gamma, "advlab_eps_probe": not args.no_eps_probe,
           "advlab_eps_probes_per_iteration": args.eps_probes_per_iteration,
           "advlab_first_probe_radius": args.first_probe_radius, "budgets": args.budget,
           "results": {}}
    for attack_name in args.attacks.split(","):
        budget = args.budget[attack_name]
        grid = sorted({q for q in (10, 25, 50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 2500, 5000) if q <= budget}
                      | {budget})
        for library in args.libraries.split(","):
            for seed in [int(s) for s in args.seeds.split(",")]:
                run = per_image(attack_name, library, model, x, y, args, seed)
                s = summarize(run["records"], budget, args.eps, grid)
                s["seconds"] = run["seconds"]
                if attack_name == "hopskipjump" and library == "advlab" and not args.no_distance_run:
                    # advlab's HopSkipJump stops at the first success within eps (its contract), so its
                    # distance curve comes from a second run at a tiny eps, which keeps it minimizing
                    shrink = per_image(attack_name, library, model, x, y, args, seed, hsj_eps=args.tiny_eps)
                    t = summarize(shrink["records"], budget, args.eps, grid)
                    s["median_distance_at"] = t["median_distance_at"]
                    s["tiny_eps_run"] = {k: t[k] for k in ("success_rate", "median_queries", "first_success",
                                                           "success_at")}
                    s["seconds"] += shrink["seconds"]
                out["results"][f"{attack_name}/{library}/seed{seed}"] = s
                print(f"{args.name} {attack_name} {library} seed {seed}: success {s['success_rate']:.3f}, median "
                      f"queries {s['median_queries']}, median Linf at {budget}: "
                      f"{s['median_distance_at'][str(budget)]:.4f}, {run['seconds']:.0f} s", flush=True)
    if args.merge:
        kept: dict = {}
        ran = {key.rsplit("/", 1)[0] for key in out["results"]}
        for name in args.merge.split(","):
            earlier = json.loads(Path(name).read_text())
            same = all(earlier.get(k) == out[k] for k in ("images", "offset", "eps", "budgets"))
            if not same:
                raise SystemExit(f"{name} was run on other images, eps or budgets; not merged")
            for k, v in earlier["results"].items():
                if k.rsplit("/", 1)[0] not in ran:
                    if k in kept:
                        raise SystemExit(f"{k} is in two of the merged files; not merged")
                    kept[k] = v
        out["results"] = {**kept, **out["results"]}
        out["merged_from"] = {"files": [Path(name).name for name in args.merge.split(",")], "kept": sorted(kept)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
