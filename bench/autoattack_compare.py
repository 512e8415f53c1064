"""advlab's standard suite against the official AutoAttack (fra31/auto-attack, standard version) and
advlab's APGD-CE against torchattacks' APGD at equal iterations, on the same model and tensors.

Run in the bench-only environment that has autoattack and torchattacks installed, advlab from the
source tree (docs/evaluation.md says how the environment was made):

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv-peers/bin/python bench/autoattack_compare.py \
        --model CHECKPOINT --eps 0.3 --n 200 --out bench/results/autoattack_compare.json

Every contender attacks the same nn.Module through one counting wrapper: a forward pass over an input
that requires a gradient counts as a gradient call (forward + backward; every attack here does one
backward per such forward), any other forward pass as a query (forward only). The robust verdict per
sample comes from the benchmark's own forward pass on each library's returned images (AutoAttack
returns adversarial images; advlab returns per-sample records and the images it found). Times are
CPU seconds of this process (time.process_time), one thread, contenders in turn in the same run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

from advlab.data import load_dataset
from advlab.evaluation.suite import SuiteConfig, run_suite
from advlab.models import load_checkpoint


class Counter(nn.Module):
    """Counts image-passes through the model: with a gradient (grad) and without (forward only)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.phase = "other"
        self.grad: dict[str, int] = {}
        self.plain: dict[str, int] = {}

    def forward(self, x):
        table = self.grad if (torch.is_grad_enabled() and x.requires_grad) else self.plain
        table[self.phase] = table.get(self.phase, 0) + x.shape[0]
        return self.model(x)

    def reset(self):
        self.grad, self.plain, self.phase = {}, {}, "other"


def predict(model, x, bs=500):
    with torch.no_grad():
        return torch.cat([model(x[i:i + bs]).argmax(1) for i in range(0, len(x), bs)])


def run_autoattack(counter: Counter, x, y, eps, norm, seed, bs):
    from autoattack import AutoAttack

    counter.reset()
    adversary = AutoAttack(counter, norm="Linf" if norm == "linf" else "L2", eps=eps, version="standard",
                           device="cpu", seed=seed, verbose=False)
    for name in ("apgd", "apgd_targeted", "fab", "square"):  # tag the passes of each attack
        attack = getattr(adversary, name)
        original = attack.perturb

        def tagged(*a, _original=original, _name=name, **k):
            counter.phase = _name
            try:
                return _original(*a, **k)
            finally:
                counter.phase = "other"
        attack.perturb = tagged
    start = time.process_time()
    x_adv = adversary.run_standard_evaluation(x, y, bs=bs)
    cpu = time.process_time() - start
    robust = predict(counter.model, x_adv) == y
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    return {"robust": robust, "cpu": cpu, "grad": dict(counter.grad), "plain": dict(counter.plain),
            "max_norm": float(size.max())}


def run_advlab(counter: Counter, x, y, eps, norm, seed, bs, members=None):
    counter.reset()
    start = time.process_time()
    ev = run_suite(counter, x, y, [eps], norm, "standard", members=members, config=SuiteConfig(seed=seed),
                   batch_size=bs, progress=False, diagnostics=False)
    cpu = time.process_time() - start
    robust = ev.broken_eps > eps
    return {"robust": robust, "cpu": cpu, "grad": dict(counter.grad), "plain": dict(counter.plain), "ev": ev}


def run_torchattacks_apgd(counter: Counter, x, y, eps, norm, seed, steps):
    import torchattacks

    counter.reset()
    attack = torchattacks.APGD(counter, norm="Linf" if norm == "linf" else "L2", eps=eps, steps=steps,
                               n_restarts=1, loss="ce", seed=seed)
    start = time.process_time()
    x_adv = attack(x, y)
    cpu = time.process_time() - start
    return {"robust": predict(counter.model, x_adv) == y, "cpu": cpu, "grad": dict(counter.grad),
            "plain": dict(counter.plain)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a .safetensors classifier checkpoint")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--eps", type=float, default=0.3)
    p.add_argument("--norm", default="linf", choices=("linf", "l2"))
    p.add_argument("--n", type=int, default=200, help="first N test images")
    p.add_argument("--bs", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip", default="", help="comma-separated: advlab (the suite), autoattack, torchattacks")
    p.add_argument("--out", default="bench/results/autoattack_compare.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    model, meta = load_checkpoint(args.model)
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    counter = Counter(model).eval()
    x, y = load_dataset(args.dataset, "test").tensors(args.n)
    clean = predict(model, x) == y
    out = {"model": args.model, "recipe": meta.get("recipe"), "dataset": args.dataset, "eps": args.eps,
           "norm": args.norm, "n": args.n, "clean_accuracy": clean.float().mean().item(), "seed": args.seed}
    skip = set(filter(None, args.skip.split(",")))
    if "advlab" in skip:
        skip.add("autoattack")  # the comparison needs both
    else:
        ours = run_advlab(counter, x, y, args.eps, args.norm, args.seed, args.bs)
        ev = ours.pop("ev")
        out["advlab"] = {"robust_accuracy": ours["robust"].float().mean().item(), "cpu_seconds": ours["cpu"],
                         "gradient_calls": sum(ours["grad"].values()), "forward_only": sum(ours["plain"].values()),
                         "per_attack": ev.to_dict()["cost"], "accuracy_after": ev.accuracy_after,
                         "broken_by_count": ev.to_dict()["broken_by_count"]}
        print("advlab", json.dumps(out["advlab"]))
    if "autoattack" not in skip:
        aa = run_autoattack(counter, x, y, args.eps, args.norm, args.seed, args.bs)
        out["autoattack"] = {"robust_accuracy": aa["robust"].float().mean().item(), "cpu_seconds": aa["cpu"],
                             "gradient_calls": sum(aa["grad"].values()), "forward_only": sum(aa["plain"].values()),
                             "per_attack_gradient_calls": aa["grad"], "per_attack_forward_only": aa["plain"],
                             "max_norm": aa["max_norm"]}
        out["disagreement"] = {"broken_by_advlab_only": int((~ours["robust"] & aa["robust"]).sum()),
                               "broken_by_autoattack_only": int((ours["robust"] & ~aa["robust"]).sum())}
        out["ratios"] = {"gradient_calls_advlab_over_autoattack":
                         out["advlab"]["gradient_calls"] / max(out["autoattack"]["gradient_calls"], 1),
                         "cpu_advlab_over_autoattack": ours["cpu"] / max(aa["cpu"], 1e-9)}
        print("autoattack", json.dumps(out["autoattack"]), json.dumps(out["disagreement"]), json.dumps(out["ratios"]))
    if "torchattacks" not in skip:
        ce = run_advlab(counter, x, y, args.eps, args.norm, args.seed, args.bs, members=["apgd-ce"])
        ce.pop("ev")
        ta = run_torchattacks_apgd(counter, x, y, args.eps, args.norm, args.seed, 100)
        out["apgd_ce_vs_torchattacks"] = {
            "advlab_robust_accuracy": ce["robust"].float().mean().item(), "advlab_cpu": ce["cpu"],
            "advlab_gradient_calls": sum(ce["grad"].values()),
            "torchattacks_robust_accuracy": ta["robust"].float().mean().item(), "torchattacks_cpu": ta["cpu"],
            "torchattacks_gradient_calls": sum(ta["grad"].values()),
            "broken_by_advlab_only": int((~ce["robust"] & ta["robust"]).sum()),
            "broken_by_torchattacks_only": int((ce["robust"] & ~ta["robust"]).sum())}
        print("apgd-ce vs torchattacks", json.dumps(out["apgd_ce_vs_torchattacks"]))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
