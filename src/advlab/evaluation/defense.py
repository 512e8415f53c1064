"""An honest robustness evaluation of a (defended) classifier, with gradient-masking diagnostics.

Robust accuracy at each eps under FGSM, PGD on the cross-entropy with restarts, PGD on the logit
margin of Carlini & Wagner (2017) with restarts, and the per-sample worst case over all three (a
sample counts as robust only if every attack failed on it, in the spirit of AutoAttack, Croce &
Hein 2020). Then the checks of Athalye, Carlini & Wagner (2018, sec. 3.1) and Carlini et al. (2019,
"On evaluating adversarial robustness", sec. 5), each a test that can fire:

- single-step stronger than iterative: FGSM beats PGD, so PGD is not following a useful gradient;
- a larger eps giving a higher accuracy: an attack that broke a sample inside a small ball fails
  inside a larger ball that contains it;
- an unbounded attack (eps = 1: any image at all) not reaching near-zero accuracy;
- vanishing input gradients: the cross-entropy's gradient is exactly zero (a saturated softmax);
- black-box stronger than white-box: Square Attack, which never sees a gradient, breaks samples
  every white-box attack left alone;

and the four checks of advlab.evaluation.diagnostics, which read the size of the evidence: FGSM near
clean accuracy where PGD is far below (catastrophic overfitting), saturated outputs with vanishing
gradients, accuracy still falling with more restarts or steps, and one attack of the suite breaking
what another left.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from advlab.attacks import FGSM, PGD
from advlab.attacks.base import Cost
from advlab.attacks.blackbox.oracle import LocalOracle
from advlab.attacks.blackbox.square import Square
from advlab.attacks.common import loss_gradient
from advlab.evaluation.diagnostics import AttackOutcome, Diagnostic, masking_diagnostics
from advlab.evaluation.robust import RobustEvaluation, robust_accuracy
from advlab.runtime import BatchSize, as_batch_size, eval_mode


@dataclass
class DefenseEvaluation:
    robust: RobustEvaluation
    attacks: dict[str, str]  # key -> display name
    diagnostics: list[Diagnostic]

    @property
    def masking_suspected(self) -> bool:
        return any(d.fired for d in self.diagnostics)

    def to_dict(self) -> dict:
        return {**self.robust.to_dict(), "attacks": self.attacks, "masking_suspected": self.masking_suspected,
                "diagnostics": [d.to_dict() for d in self.diagnostics]}

    def to_record(self) -> dict:
        """to_dict() plus the per-sample smallest breaking eps, enough to rebuild the evaluation."""
        return {**self.to_dict(), "broken_at": {k: v.tolist() for k, v in self.robust.broken_at.items()}}

    @classmethod
    def from_record(cls, d: dict) -> DefenseEvaluation:
        """The evaluation to_record() stored (an evaluations record of advlab.evaluation.records)."""
        cost = {k: Cost(**c) for k, c in d.get("cost", {}).items()}
        robust = RobustEvaluation(d["eps"], d["robust_accuracy"], {k: torch.tensor(v, dtype=torch.float32)
                                                                   for k, v in d["broken_at"].items()},
                                  d["clean_accuracy"], d["n"], cost, d.get("independent_accuracy", {}))
        return cls(robust, d["attacks"], [Diagnostic(**x) for x in d["diagnostics"]])


def attack_suite(steps: int = 40, restarts: int = 10, step_size: float | None = None, seed: int = 0):
    """The white-box attacks of the evaluation: key -> (display name, factory eps -> Attack).

    PGD stops on a sample as soon as it is misclassified and restarts only on the samples that
    survived, so the evaluation costs a fraction of fixed-step PGD at the same (or lower) accuracy.
    """
    tag = f"{steps}x{restarts}" if restarts > 1 else f"{steps}"
    return {
        "fgsm": ("FGSM", lambda e: FGSM(eps=e)),
        "pgd": (f"PGD-{tag} (cross-entropy)", lambda e: PGD(eps=e, steps=steps, step_size=step_size,
                                                           restarts=restarts, loss="ce", early_stop=True,
                                                           seed=seed)),
        "cw": (f"PGD-{tag} (C&W margin on logits)", lambda e: PGD(eps=e, steps=steps, step_size=step_size,
                                                                 restarts=restarts, loss="cw", early_stop=True,
                                                                 seed=seed + 1)),
    }


def check_single_step(robust: RobustEvaluation, tolerance: float = 0.01) -> Diagnostic:
    fgsm, pgd = robust.accuracy["fgsm"], robust.accuracy["pgd"]
    gaps = [(e, p - f) for e, f, p in zip(robust.eps, fgsm, pgd, strict=True)]
    worst_eps, worst_gap = max(gaps, key=lambda g: g[1])
    fired = worst_gap > tolerance
    message = (f"FGSM (one step) beats PGD by {worst_gap:.1%} at eps {worst_eps:g}: the iterative attack is not "
               "following a useful gradient, so its figures overstate robustness." if fired else
               "PGD is at least as strong as FGSM at every eps.")
    return Diagnostic("single-step stronger than iterative", fired, message,
                      {"pgd_minus_fgsm": {str(e): g for e, g in gaps}, "tolerance": tolerance},
                      "Run PGD with more steps, a smaller step size and more restarts, and an attack on the "
                      "logits (the C&W margin column)." if fired else "")


def check_monotone(robust: RobustEvaluation, tolerance: float = 0.01) -> Diagnostic:
    rises = []
    for key, acc in robust.independent.items():
        for i in range(1, len(acc)):
            rises.append((acc[i] - acc[i - 1], key, robust.eps[i - 1], robust.eps[i]))
    rise, key, e0, e1 = max(rises) if rises else (0.0, "", 0.0, 0.0)
    fired = rise > tolerance
    message = (f"{key} leaves {rise:.1%} more samples accurate at eps {e1:g} than at eps {e0:g}, although the "
               "larger ball contains the smaller: the attack is failing, not the model succeeding." if fired else
               "Every attack's accuracy falls (or stays) as eps grows.")
    return Diagnostic("larger eps gives higher accuracy", fired, message,
                      {"independent_accuracy": robust.independent, "tolerance": tolerance},
                      "Trust only the per-sample worst case over nested eps, and strengthen the attack that "
                      "rose (more steps and restarts)." if fired else "")


def check_unbounded(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 100, tolerance: float = 0.02,
                    batch_size: int | BatchSize = 256, device: torch.device | str = "cpu") -> Diagnostic:
    """PGD on the cross-entropy from the clean image with eps = 1 (every image is allowed)."""
    ev = robust_accuracy(model, x, y, {"pgd": lambda e: PGD(eps=e, steps=steps, random_start=False, early_stop=True)},
                         [1.0], batch_size=batch_size, device=device, progress=False)
    acc = ev.accuracy["pgd"][0]
    fired = acc > tolerance
    message = (f"PGD-{steps} on the cross-entropy with an unbounded budget (eps = 1, any image) still leaves "
               f"{acc:.1%} of {len(x)} samples accurate; a working attack reaches 0%." if fired else
               f"An unbounded PGD-{steps} (eps = 1) brings accuracy to {acc:.1%} of {len(x)} samples, as it should.")
    return Diagnostic("unbounded attack does not reach 0%", fired, message,
                      {"accuracy_at_eps_1": acc, "n": len(x), "steps": steps, "tolerance": tolerance},
                      "Attack the logits (C&W margin, DLR) instead of the softmax, and check the model's "
                      "forward pass for non-differentiable steps (BPDA)." if fired else "")


def gradient_statistics(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int | BatchSize = 256,
                        device: torch.device | str = "cpu") -> dict:
    """Per-sample input gradients of the cross-entropy: the share exactly zero, non-finite, and of
    samples whose float32 softmax is exactly one-hot (saturated); the median gradient L1 norm."""
    def one(s: slice) -> tuple[int, int, int, torch.Tensor]:
        xb, yb = x[s].to(device), y[s].to(device)
        grad, logits, _ = loss_gradient(model, xb, yb, None, "ce", Cost())
        flat = grad.flatten(1)
        finite = torch.isfinite(flat).all(1)
        return (int((~finite).sum()), int((finite & (flat == 0).all(1)).sum()),
                int((F.softmax(logits, 1).amax(1) == 1.0).sum()), flat.abs().sum(1).cpu())

    with eval_mode(model):
        parts = as_batch_size(batch_size).map(one, len(x))
    n = len(x)
    nonfinite, zero, saturated = (sum(p[i] for p in parts) for i in range(3))
    return {"zero_gradient": zero / n, "nonfinite_gradient": nonfinite / n, "saturated_softmax": saturated / n,
            "median_gradient_l1": float(torch.cat([p[3] for p in parts]).median()), "n": n}


def check_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, tolerance: float = 0.05,
                    batch_size: int | BatchSize = 256, device: torch.device | str = "cpu") -> Diagnostic:
    stats = gradient_statistics(model, x, y, batch_size, device)
    bad = stats["zero_gradient"] + stats["nonfinite_gradient"]
    fired = bad > tolerance
    message = (f"The cross-entropy's input gradient is exactly zero (or not finite) on {bad:.1%} of samples "
               f"(softmax saturated to exactly one-hot on {stats['saturated_softmax']:.1%}): gradient attacks on the "
               "softmax output see nothing, and their figures mean nothing. Attack the logits instead." if fired else
               f"Input gradients are informative (zero on {stats['zero_gradient']:.1%} of samples, median L1 norm "
               f"{stats['median_gradient_l1']:.2e}).")
    return Diagnostic("vanishing or saturated gradients", fired, message, {**stats, "tolerance": tolerance},
                      "Attack the logits (C&W margin, DLR) and run a black-box attack." if fired else "")


def check_blackbox(model: nn.Module, x: torch.Tensor, y: torch.Tensor, whitebox_broken_at: torch.Tensor, eps: float,
                   queries: int = 1000, tolerance: float = 0.01, seed: int = 0,
                   device: torch.device | str = "cpu", batch_size: int | BatchSize | None = None) -> Diagnostic:
    """Square Attack (Andriushchenko et al. 2020) at eps on (x, y); whitebox_broken_at holds the
    white-box worst case's smallest breaking eps of the same samples. batch_size None: all at once."""
    p_init = 0.3 if x.shape[1] == 1 else 0.05  # the paper's larger windows for MNIST's 28x28 digits
    square = Square(eps=eps, max_queries=queries, p_init=p_init, seed=seed)
    batch = as_batch_size(max(len(x), 1) if batch_size is None else batch_size)

    def one(s: slice) -> torch.Tensor:
        result = square(LocalOracle(model), x[s].to(device), y[s].to(device))
        return (result.adv_pred != result.labels).cpu()

    blackbox_broken = batch.cat(one, len(x))
    only_blackbox = blackbox_broken & (whitebox_broken_at > eps)
    share = only_blackbox.float().mean().item()
    fired = share > tolerance
    message = (f"Square Attack ({queries} queries, no gradients) breaks {share:.1%} of samples that every white-box "
               f"attack left accurate at eps {eps:g}: the white-box attacks are being masked." if fired else
               f"Square Attack ({queries} queries) breaks no more than the white-box attacks at eps {eps:g} "
               f"(black-box accuracy {1 - blackbox_broken.float().mean().item():.1%} on {len(x)} samples).")
    return Diagnostic("black-box stronger than white-box", fired, message,
                      {"eps": eps, "queries": queries, "n": len(x), "blackbox_accuracy":
                       1 - blackbox_broken.float().mean().item(), "broken_only_by_blackbox": share,
                       "tolerance": tolerance},
                      "Look for the non-differentiable or randomized part of the model and attack through it "
                      "(BPDA, EOT); run Square Attack with more queries on more images." if fired else "")


def evaluate_defense(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: Sequence[float], steps: int = 40,
                     restarts: int = 10, step_size: float | None = None, blackbox_n: int = 100,
                     blackbox_queries: int = 1000, unbounded_n: int = 200, seed: int = 0,
                     batch_size: int | BatchSize = 256,
                     device: torch.device | str = "cpu", progress: bool = True,
                     effort_n: int = 200) -> DefenseEvaluation:
    """Robust accuracy per eps under FGSM, PGD (CE), PGD (C&W margin) and their worst case, and every
    diagnostic. The black-box, unbounded and more-restarts checks run on the first blackbox_n /
    unbounded_n / effort_n samples (0 skips them)."""
    suite = attack_suite(steps, restarts, step_size, seed)
    batch_size = as_batch_size(batch_size)  # one size for every loop: halved once, it stays halved
    robust = robust_accuracy(model, x, y, {k: f for k, (_, f) in suite.items()}, eps, batch_size, device, progress,
                             recheck=True)
    diagnostics = [check_single_step(robust), check_monotone(robust), check_gradients(model, x, y,
                                                                                        batch_size=batch_size,
                                                                                        device=device)]
    if unbounded_n:
        diagnostics.append(check_unbounded(model, x[:unbounded_n], y[:unbounded_n], batch_size=batch_size,
                                           device=device))
    top = max(robust.eps)
    if blackbox_n and top > 0:
        worst = torch.stack(list(robust.broken_at.values())).amin(0)
        diagnostics.append(check_blackbox(model, x[:blackbox_n], y[:blackbox_n], worst[:blackbox_n], top,
                                          blackbox_queries, seed=seed, device=device, batch_size=batch_size))
    names = {k: name for k, (name, _) in suite.items()}
    diagnostics += masking_diagnostics(model, x, y, suite_outcomes(robust, names, single_step={"fgsm"}),
                                       robust_clean(robust), steps, effort_n, seed=seed, batch_size=batch_size,
                                       device=device)
    return DefenseEvaluation(robust, names, diagnostics)


def suite_outcomes(robust: RobustEvaluation, names: dict[str, str], single_step=frozenset()
                   ) -> dict[float, list[AttackOutcome]]:
    """Per eps, each attack's per-sample verdict from its smallest breaking eps (the balls are nested)."""
    return {e: [AttackOutcome(names.get(k, k), robust.broken_at[k] > e, k in single_step) for k in robust.broken_at]
            for e in robust.eps}


def robust_clean(robust: RobustEvaluation) -> torch.Tensor:
    """Per-sample clean correctness: every attack's smallest breaking eps is above 0."""
    return torch.stack(list(robust.broken_at.values())).amin(0) > 0


def summary_rows(evaluation: DefenseEvaluation) -> list[list]:
    """Table rows: eps, then accuracy per attack, then the worst case."""
    r = evaluation.robust
    worst = r.worst_case()
    return [[e, *[r.accuracy[k][i] for k in evaluation.attacks], worst[i]] for i, e in enumerate(r.eps)]

