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


class NoisyModel(nn.Module):
    """A randomized classifier for the rand version: Gaussian noise of sigma added to the input at every
    forward pass (one draw of randomized smoothing's base classifier; bench-only)."""

    def __init__(self, model: nn.Module, sigma: float) -> None:
        super().__init__()
        self.model, self.sigma = model, sigma

    def forward(self, x):
        return self.model(x + self.sigma * torch.randn_like(x))


def run_autoattack(counter: Counter, x, y, eps, norm, seed, bs, version="standard", square=True):
    from autoattack import AutoAttack

    counter.reset()
    adversary = AutoAttack(counter, norm="Linf" if norm == "linf" else "L2", eps=eps, version=version,
                           device=str(x.device), seed=seed, verbose=False)
    if not square:  # the standard version's settings, its last attack left out
        adversary.attacks_to_run = [a for a in adversary.attacks_to_run if a != "square"]
    row_of = {x[i].cpu().numpy().tobytes(): i for i in range(len(x))}
    broken_by = [""] * len(x)
    tags = {"apgd": "APGD-CE", "apgd_targeted": "APGD-T", "fab": "FAB-T", "square": "Square"}
    if version == "rand":
        tags["apgd"] = "APGD"
    for name in ("apgd", "apgd_targeted", "fab", "square"):  # tag the passes of each attack
        attack = getattr(adversary, name)
        original = attack.perturb

        def tagged(xb, yb, *a, _original=original, _name=name, **k):
            counter.phase = _name
            try:
                out = _original(xb, yb, *a, **k)
            finally:
                counter.phase = "other"
            # which samples this attack broke (the benchmark's own forward passes are not counted)
            wrong = predict(counter.model, out) != yb
            for j in wrong.nonzero().squeeze(1).tolist():
                i = row_of.get(xb[j].cpu().numpy().tobytes())
                if i is not None and not broken_by[i]:
                    broken_by[i] = tags[_name] if _name != "apgd" or version != "rand" else (
                        "APGD-" + adversary.apgd.loss.upper())
            return out
        attack.perturb = tagged
    start = time.process_time()
    x_adv = adversary.run_standard_evaluation(x, y, bs=bs)
    cpu = time.process_time() - start
    robust = predict(counter.model, x_adv) == y
    clean_wrong = predict(counter.model, x) != y
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    for i in clean_wrong.nonzero().squeeze(1).tolist():
        broken_by[i] = "clean"
    counts: dict[str, int] = {}
    for i, by in enumerate(broken_by):
        if by and by != "clean" and not robust[i]:
            counts[by] = counts.get(by, 0) + 1
    return {"robust": robust, "cpu": cpu, "grad": dict(counter.grad), "plain": dict(counter.plain),
            "max_norm": float(size.max()), "broken_by_count": counts, "adversarial": x_adv}


def run_advlab(counter: Counter, x, y, eps, norm, seed, bs, members=None, schedule="fast", suite="standard"):
    counter.reset()
    start = time.process_time()
    ev = run_suite(counter, x, y, [eps], norm, suite, members=members, config=SuiteConfig.schedule(schedule, seed=seed),
                   batch_size=bs, device=x.device, progress=False, diagnostics=False, keep_adversarial=True)
    cpu = time.process_time() - start
    adversarial = ev.adversarial.to(x.device)
    delta = (adversarial - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    if float(size.max()) > eps * (1 + 1e-5) + 1e-6:
        raise SystemExit(f"advlab returned a point outside the eps ball ({float(size.max())} > {eps})")
    # the verdict, as for AutoAttack: the benchmark's own forward pass on the returned images
    robust = predict(counter.model, adversarial) == y
    return {"robust": robust, "cpu": cpu, "grad": dict(counter.grad), "plain": dict(counter.plain), "ev": ev,
            "adversarial": adversarial, "robust_by_records": (ev.broken_eps > eps).to(x.device)}


def randomized_verdicts(model, x_adv, y, draws: int = 20) -> dict:
    """A randomized model's accuracy on the returned images under two rules besides the one draw of the robust
    verdict, the same for both libraries: averaged over fresh draws (the one-draw figure's expectation), and
    the accuracy of the logits averaged over the draws (advlab's rand-suite verdict)."""
    correct, logits = [], 0
    with torch.no_grad():
        for _ in range(draws):
            out = torch.cat([model(x_adv[i:i + 500]) for i in range(0, len(x_adv), 500)])
            correct.append((out.argmax(1) == y).float().mean().item())
            logits = logits + out
    return {"expected_accuracy_20_draws": sum(correct) / draws,
            "averaged_logits_accuracy_20_draws": (logits.argmax(1) == y).float().mean().item()}


def summary(run: dict, ev) -> dict:
    d = ev.to_dict()
    return {"robust_accuracy": run["robust"].float().mean().item(), "cpu_seconds": run["cpu"],
            "gradient_calls": sum(run["grad"].values()), "forward_only": sum(run["plain"].values()),
            "per_attack": d["cost"], "accuracy_after": ev.accuracy_after, "broken_by_count": d["broken_by_count"],
            "broken_by_target_rank": d["broken_by_target_rank"], "fab_attacked": d["fab_attacked"],
            "suite": ev.suite, "config": d["config"], "robust_samples": run["robust"].nonzero().squeeze(1).tolist(),
            "robust_accuracy_by_records": run["robust_by_records"].float().mean().item()}


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
    p.add_argument("--device", default="cpu", help="cpu or cuda (a GPU session's full-size table)")
    p.add_argument("--skip", default="", help="comma-separated: advlab (the suite), autoattack, torchattacks")
    p.add_argument("--schedule", default="fast", choices=("fast", "autoattack"), help="advlab's schedule")
    p.add_argument("--also-autoattack-schedule", action="store_true",
                   help="also run advlab's APGD-CE and APGD-T with the authors' 9 targets: how many samples the "
                   "targets ranked 4-9 break (FAB-T's and Square's share come from the official run)")
    p.add_argument("--autoattack-from", default=None, metavar="JSON",
                   help="take the official AutoAttack's result from an earlier output of this script on the same "
                   "model, images, eps, norm and seed (its per-sample verdicts) instead of running it again")
    p.add_argument("--no-square", action="store_true",
                   help="leave Square out on both sides (forward passes only: it changes no gradient-call count; "
                   "for a CPU too busy to spend 5,000 queries per robust image)")
    p.add_argument("--noise-sigma", type=float, default=0.0,
                   help="evaluate the model with Gaussian noise of this sigma in every forward pass (randomized): "
                   "advlab's rand suite against AutoAttack's rand version")
    p.add_argument("--autoattack-only", action="store_true",
                   help="run only the official AutoAttack and save its verdicts (for a later --autoattack-from)")
    p.add_argument("--out", default="bench/results/autoattack_compare.json")
    args = p.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    model, meta = load_checkpoint(args.model)
    model.eval().to(args.device)
    for param in model.parameters():
        param.requires_grad_(False)
    if args.noise_sigma > 0:
        model = NoisyModel(model, args.noise_sigma).eval()
    counter = Counter(model).eval()
    x, y = load_dataset(args.dataset, "test").tensors(args.n)
    x, y = x.to(args.device), y.to(args.device)
    clean = predict(model, x) == y
    suite, version = ("rand", "rand") if args.noise_sigma > 0 else ("standard", "standard")
    out = {"model": args.model.replace(str(Path.home()), "~", 1),  # no machine path in the record
           "recipe": meta.get("recipe"), "dataset": args.dataset, "eps": args.eps,
           "norm": args.norm, "n": args.n, "clean_accuracy": clean.float().mean().item(), "seed": args.seed,
           "noise_sigma": args.noise_sigma, "square": not args.no_square}
    skip = set(filter(None, args.skip.split(",")))
    ours = aa = None
    if args.autoattack_only:
        skip |= {"advlab", "torchattacks"}
    elif "advlab" in skip:
        skip.add("autoattack")  # the comparison needs both
    else:
        members = ["apgd-ce", "apgd-t", "fab-t"] if args.no_square and suite == "standard" else None
        ours = run_advlab(counter, x, y, args.eps, args.norm, args.seed, args.bs, members=members,
                          schedule=args.schedule, suite=suite)
        out["advlab"] = summary(ours, ours.pop("ev"))
        print("advlab", json.dumps(out["advlab"]), flush=True)
    if args.also_autoattack_schedule and suite == "standard":
        full = run_advlab(counter, x, y, args.eps, args.norm, args.seed, args.bs, schedule="autoattack",
                          members=["apgd-ce", "apgd-t"])
        out["advlab_autoattack_schedule"] = summary(full, full.pop("ev"))
        print("advlab (autoattack schedule)", json.dumps(out["advlab_autoattack_schedule"]), flush=True)
    if args.autoattack_from:
        earlier = json.loads(Path(args.autoattack_from).read_text())
        same = ("model", "dataset", "eps", "norm", "n", "seed", "noise_sigma", "square")
        if any(earlier.get(k, out[k]) != out[k] for k in same) or "autoattack" not in earlier:
            raise SystemExit(f"{args.autoattack_from} is not an AutoAttack run on the same model, images and settings")
        out["autoattack"] = {**earlier["autoattack"], "reused_from": args.autoattack_from}
        robust = torch.zeros(args.n, dtype=torch.bool, device=x.device)
        robust[out["autoattack"]["robust_samples"]] = True
        aa = {"robust": robust, "cpu": out["autoattack"]["cpu_seconds"]}
        skip.add("autoattack")
    if "autoattack" not in skip:
        aa = run_autoattack(counter, x, y, args.eps, args.norm, args.seed, args.bs, version=version,
                            square=not args.no_square)
        out["autoattack"] = {"robust_accuracy": aa["robust"].float().mean().item(), "cpu_seconds": aa["cpu"],
                             "gradient_calls": sum(aa["grad"].values()), "forward_only": sum(aa["plain"].values()),
                             "per_attack_gradient_calls": aa["grad"], "per_attack_forward_only": aa["plain"],
                             "max_norm": aa["max_norm"], "broken_by_count": aa["broken_by_count"],
                             "version": version, "robust_samples": aa["robust"].nonzero().squeeze(1).tolist()}
    if args.noise_sigma > 0:  # a randomized model: both libraries' images under the same averaged rule
        for side, run in (("advlab", ours), ("autoattack", aa)):
            if run is not None and side in out and "adversarial" in run:
                out[side].update(randomized_verdicts(counter.model, run["adversarial"], y))
    if "autoattack" in out and "advlab" in out:
        out["disagreement"] = {"broken_by_advlab_only": int((~ours["robust"] & aa["robust"]).sum()),
                               "broken_by_autoattack_only": int((ours["robust"] & ~aa["robust"]).sum())}
        out["ratios"] = {"gradient_calls_advlab_over_autoattack":
                         out["advlab"]["gradient_calls"] / max(out["autoattack"]["gradient_calls"], 1),
                         "cpu_advlab_over_autoattack": ours["cpu"] / max(aa["cpu"], 1e-9)}
        print("autoattack", json.dumps(out["autoattack"]), json.dumps(out["disagreement"]), json.dumps(out["ratios"]),
              flush=True)
    if "torchattacks" not in skip and suite == "standard":
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
