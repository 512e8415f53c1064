"""Gradient-masking checks that read the evidence of an evaluation, for any attack suite.

A suite hands its per-sample results in as a list of ``AttackOutcome`` per eps (attack name and a
boolean mask: True where the sample is classified correctly after the attack). The four checks here
fire on catastrophic overfitting (Wong, Rice & Kolter 2020, sec. 5.3: a model that defeats the one
FGSM step it was trained on, and nothing else) and on saturated softmax outputs (defensive
distillation; Carlini & Wagner 2017), and stay silent on standard and PGD-trained models:

- ``check_single_step_gap``: the single-step attack leaves the model near its clean accuracy while
  the iterative attacks break most of what it left (Wong et al.'s sign of catastrophic overfitting);
- ``check_saturation``: softmax outputs exactly one-hot in float32 and input gradients of the
  cross-entropy that are not zero but too small to move the loss across the ball (the size is read
  against eps, not only tested for exact zeros);
- ``check_more_effort``: accuracy that keeps falling with more restarts or more steps of PGD, so the
  budget used is not enough (Carlini et al. 2019, "On evaluating adversarial robustness", sec. 5.2);
- ``check_stronger_attack``: an attack of the suite breaking what a weaker one left, reported as the
  points by which the weaker attack alone would have overstated robustness (Croce & Hein 2020 show
  such gaps between PGD and AutoAttack on published defenses).

Each returns a ``Diagnostic`` saying what it saw and what to run next.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from advlab.attacks import PGD
from advlab.attacks.base import Cost
from advlab.attacks.common import loss_gradient, margin
from advlab.runtime import BatchSize, as_batch_size, eval_mode

# Thresholds (docs/defenses.md, "Diagnostics that fire", says why each is where it is).
SINGLE_STEP_KEEPS = 0.8  # the single step leaves at least this share of the clean accuracy ...
ITERATIVE_BREAKS = 0.4  # ... the iterative attacks break at least this share of what it left ...
SINGLE_STEP_MIN_GAP = 0.3  # ... and at least 30 points
SATURATED_SHARE = 0.25  # share of correctly classified samples with an exactly one-hot softmax
FIRST_ORDER_REACH = 1e-4  # median eps * ||grad CE||_1 below this: the gradient cannot move the loss
MORE_EFFORT_GAIN = 0.04  # points found by k restarts over one (or 4x the steps over the steps)
STRONGER_GAIN = 0.05  # points by which a weaker attack alone overstates the suite's worst case ...
STRONGER_SHARE = 0.25  # ... and the share of its survivors the others break
MIN_SAMPLES = 10  # every gap must also be at least this many samples, so a handful cannot fire a check


@dataclass
class Diagnostic:
    """One gradient-masking check: whether it fired, in plain words, what to run next, and the numbers."""

    name: str
    fired: bool
    message: str
    evidence: dict = field(default_factory=dict)
    next_step: str = ""

    def to_dict(self) -> dict:
        out = {"name": self.name, "fired": self.fired, "message": self.message, "evidence": self.evidence}
        if self.next_step:
            out["next_step"] = self.next_step
        return out


@dataclass
class AttackOutcome:
    """One attack's per-sample verdict at one eps: robust[i] is True when sample i is still classified
    correctly (False for samples misclassified to begin with). single_step marks one-step attacks
    (FGSM); alone is False when the attack only ran on the samples earlier attacks left (a cascade),
    so its mask is not what it would achieve by itself."""

    name: str
    robust: torch.Tensor
    single_step: bool = False
    alone: bool = True


def _share(mask: torch.Tensor) -> float:
    return mask.float().mean().item() if len(mask) else 0.0


def _points(v: float) -> str:
    return f"{100 * v:.1f}"


def check_single_step_gap(outcomes: Mapping[float, Sequence[AttackOutcome]], clean: torch.Tensor) -> Diagnostic:
    """At some eps the single-step attack leaves at least SINGLE_STEP_KEEPS of the clean accuracy while
    the iterative attacks break at least ITERATIVE_BREAKS of what it left (and SINGLE_STEP_MIN_GAP).

    A standard model loses to FGSM at the eps where PGD breaks it; a PGD-trained one resists both. Only a
    model that learned to defeat the single step (catastrophic overfitting) is near clean under FGSM
    and far below under PGD."""
    clean_acc = _share(clean)
    per_eps, worst = {}, None
    for eps, outs in sorted(outcomes.items()):
        single = [o for o in outs if o.single_step]
        iterative = [o for o in outs if not o.single_step]
        if not single or not iterative:
            continue
        s = min(_share(o.robust) for o in single)
        it = _share(torch.stack([o.robust for o in iterative]).all(0))
        fires = (s >= SINGLE_STEP_KEEPS * clean_acc and it <= (1 - ITERATIVE_BREAKS) * s
                 and s - it >= max(SINGLE_STEP_MIN_GAP, MIN_SAMPLES / len(clean)))
        per_eps[str(eps)] = {"single_step": s, "iterative": it}
        if worst is None or (fires, s - it) > (worst[0], worst[3] - worst[2]):
            worst = (fires, eps, it, s)
    evidence = {"clean_accuracy": clean_acc, "per_eps": per_eps, "thresholds": {
        "single_step_keeps": SINGLE_STEP_KEEPS, "iterative_breaks": ITERATIVE_BREAKS,
        "min_gap": SINGLE_STEP_MIN_GAP}}
    name = "single-step far above iterative (catastrophic overfitting)"
    if worst is None:
        return Diagnostic(name, False, "No single-step attack to compare with the iterative ones.", evidence)
    fired, eps, it, s = worst
    if fired:
        return Diagnostic(name, True,
                          f"At eps {eps:g} the single-step attack leaves {s:.1%} accurate (clean {clean_acc:.1%}) "
                          f"where the iterative attacks leave {it:.1%}: the model defeats the one step it was "
                          "trained against and little else, the sign of catastrophic overfitting (Wong et al. "
                          "2020). Single-step figures mean nothing here.", evidence,
                          "Retrain with a smaller step, a carried or noisier start (--fgsm-start carry, --method "
                          "nfgsm) or --stop-on-overfit, and judge the model by the iterative worst case only.")
    return Diagnostic(name, False, f"The single-step attack is not far above the iterative ones (largest gap "
                      f"{_points(s - it)} points, at eps {eps:g}).", evidence)


def saturation_statistics(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int | BatchSize = 256,
                          device: torch.device | str = "cpu") -> dict:
    """On the correctly classified samples: the share whose float32 softmax is exactly one-hot, and the
    per-sample L1 norms of the input gradients of the cross-entropy and of the logit margin (medians)."""
    def one(s: slice) -> tuple[torch.Tensor, ...]:
        xb, yb = x[s].to(device), y[s].to(device)
        grad, logits, _ = loss_gradient(model, xb, yb, None, "ce", Cost())
        margin_grad, _, _ = loss_gradient(model, xb, yb, None, "cw", Cost())
        return ((F.softmax(logits.float(), 1).amax(1) == 1.0).cpu(), grad.flatten(1).abs().sum(1).cpu(),
                margin_grad.flatten(1).abs().sum(1).cpu(), margin(logits, yb).cpu(), (logits.argmax(1) == yb).cpu())

    with eval_mode(model):
        parts = as_batch_size(batch_size).map(one, len(x))
    one_hot, ce_norms, margin_norms, margins, correct = ([p[i] for p in parts] for i in range(5))
    if not parts:
        return {"n": 0}
    ok = torch.cat(correct)
    if not ok.any():
        return {"n": 0}
    ce, mg = torch.cat(ce_norms)[ok], torch.cat(margin_norms)[ok]
    return {"n": int(ok.sum()), "one_hot_softmax": _share(torch.cat(one_hot)[ok]),
            "median_ce_gradient_l1": float(ce.median()), "median_margin_gradient_l1": float(mg.median()),
            "zero_ce_gradient": _share(ce == 0), "median_logit_margin": float(torch.cat(margins)[ok].median())}


def check_saturation(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, batch_size: int | BatchSize = 256,
                     device: torch.device | str = "cpu") -> Diagnostic:
    """Saturated outputs: more than SATURATED_SHARE of the correctly classified samples have an exactly
    one-hot softmax, and the median first-order reach of the cross-entropy's gradient over the ball,
    eps * ||grad||_1 (the most a linear model of the loss could gain in the L-inf ball), is below
    FIRST_ORDER_REACH: the loss must rise by about log 2 to change the prediction, so such a gradient,
    zero or not, tells an attack on the cross-entropy nothing."""
    stats = saturation_statistics(model, x, y, batch_size, device)
    name = "saturated outputs (one-hot softmax, vanishing gradients)"
    if not stats["n"]:
        return Diagnostic(name, False, "No correctly classified sample to read the gradients of.", stats)
    reach = eps * stats["median_ce_gradient_l1"]
    evidence = {**stats, "eps": eps, "median_first_order_reach": reach,
                "thresholds": {"one_hot_share": SATURATED_SHARE, "first_order_reach": FIRST_ORDER_REACH}}
    fired = stats["one_hot_softmax"] > SATURATED_SHARE and reach < FIRST_ORDER_REACH
    if fired:
        return Diagnostic(name, True,
                          f"{stats['one_hot_softmax']:.1%} of the correctly classified samples have an exactly "
                          f"one-hot softmax and the median L1 norm of the cross-entropy's input gradient is "
                          f"{stats['median_ce_gradient_l1']:.1e} (zero on {stats['zero_ce_gradient']:.1%}): over "
                          f"the eps-{eps:g} ball it could move the loss by about {reach:.1e}, where about 0.7 is "
                          "needed. Attacks on the cross-entropy are blind here; the logit margin's gradient "
                          f"(median {stats['median_margin_gradient_l1']:.1e}) is not.", evidence,
                          "Judge the model by attacks on the logits: PGD or APGD on the C&W margin or the DLR "
                          "loss (advlab evaluate reports the C&W margin's column), and a black-box attack.")
    return Diagnostic(name, False,
                      f"Outputs are not saturated: {stats['one_hot_softmax']:.1%} of correctly classified samples "
                      f"have an exactly one-hot softmax, median cross-entropy gradient L1 norm "
                      f"{stats['median_ce_gradient_l1']:.1e} (first-order reach {reach:.1e} at eps {eps:g}).",
                      evidence)


def _pgd_breaks(model, x, y, eps, steps, seed, loss, batch_size, device) -> torch.Tensor:
    attack = PGD(eps=eps, steps=steps, loss=loss, early_stop=True, seed=seed)

    def one(s: slice) -> torch.Tensor:
        result = attack(model, x[s].to(device), y[s].to(device))
        return (result.adv_pred != result.labels).cpu()

    broken = as_batch_size(batch_size).map(one, len(x))
    return torch.cat(broken) if broken else torch.zeros(0, dtype=torch.bool)


def check_more_effort(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 40,
                      restarts: int = 5, loss: str = "ce", seed: int = 0, batch_size: int | BatchSize = 256,
                      device: torch.device | str = "cpu") -> Diagnostic:
    """PGD with 1, 2, ..., restarts random restarts (each on the samples the earlier ones left) and one
    run of 4 * steps, on (x, y): fires when the restarts or the longer run take more than
    MORE_EFFORT_GAIN off the accuracy of one run of `steps`. Accuracy that keeps falling with effort
    means the reported figure is a point on a falling curve, not a bound."""
    batch_size = as_batch_size(batch_size)
    with torch.no_grad():
        correct = torch.cat(batch_size.map(lambda s: model(x[s].to(device)).argmax(1).cpu() == y[s], len(x))
                            ) if len(x) else torch.zeros(0, dtype=torch.bool)
    robust = correct.clone()
    curve = []
    for r in range(restarts):
        todo = robust.nonzero().squeeze(1)
        if len(todo):
            broken = _pgd_breaks(model, x[todo], y[todo], eps, steps, seed + 1000 * r, loss, batch_size, device)
            robust[todo[broken]] = False
        curve.append(_share(robust))
    todo = correct.nonzero().squeeze(1)
    longer = correct.clone()
    if len(todo):
        longer[todo[_pgd_breaks(model, x[todo], y[todo], eps, 4 * steps, seed, loss, batch_size, device)]] = False
    first, last, long_acc = curve[0], curve[-1], _share(longer)
    restart_gain, step_gain = first - last, first - long_acc
    late_gain = curve[-2] - curve[-1] if len(curve) > 1 else 0.0
    evidence = {"eps": eps, "n": len(x), "loss": loss, "steps": steps, "accuracy_by_restarts": curve,
                f"accuracy_{4 * steps}_steps": long_acc, "restart_gain": restart_gain, "step_gain": step_gain,
                "last_restart_gain": late_gain, "threshold": MORE_EFFORT_GAIN}
    name = "accuracy keeps falling with more restarts or steps"
    fired = max(restart_gain, step_gain) > max(MORE_EFFORT_GAIN, (MIN_SAMPLES - 0.5) / max(len(x), 1))
    if fired:
        return Diagnostic(name, True,
                          f"At eps {eps:g} on {len(x)} samples, PGD-{steps} on the {loss} leaves {first:.1%} with one "
                          f"run, {last:.1%} after {restarts} restarts ({_points(restart_gain)} points lower; the last "
                          f"restart alone found {_points(late_gain)}) and {long_acc:.1%} with {4 * steps} steps: the "
                          "attack has not converged and the figure is not a bound.", evidence,
                          "Raise --restarts and --steps until the accuracy stops falling, and add attacks that do "
                          "not depend on the step size (APGD, Croce & Hein 2020) and a black-box attack.")
    return Diagnostic(name, False,
                      f"More effort changes little at eps {eps:g} on {len(x)} samples: one PGD-{steps} run "
                      f"{first:.1%}, {restarts} restarts {last:.1%}, {4 * steps} steps {long_acc:.1%}.", evidence)


def check_stronger_attack(outcomes: Sequence[AttackOutcome], eps: float) -> Diagnostic:
    """Each iterative attack's accuracy alone (or, for one run on survivors only, that of the attacks up
    to it) against the worst case of the whole suite: fires when one of them overstates the worst case
    by more than STRONGER_GAIN and the others break more than STRONGER_SHARE of what it left. Single-step
    attacks are left to check_single_step_gap."""
    name = "a stronger attack breaks what a weaker one left"
    iterative = [o for o in outcomes if not o.single_step]
    if len(iterative) < 2:
        return Diagnostic(name, False, "Fewer than two iterative attacks to compare.", {"eps": eps})
    worst = _share(torch.stack([o.robust for o in outcomes]).all(0))
    rows = []
    for i, o in enumerate(iterative):
        if o.alone:
            label, acc = o.name, _share(o.robust)
        else:
            label = " + ".join(p.name for p in iterative[:i + 1])
            acc = _share(torch.stack([p.robust for p in iterative[:i + 1]]).all(0))
        over = acc - worst
        rows.append({"attacks": label, "accuracy": acc, "overstated_by": over,
                     "share_broken_by_others": over / acc if acc > 0 else 0.0})
    floor = max(STRONGER_GAIN, (MIN_SAMPLES - 0.5) / len(iterative[0].robust))
    firing = [r for r in rows if r["overstated_by"] > floor and r["share_broken_by_others"] > STRONGER_SHARE]
    evidence = {"eps": eps, "worst_case": worst, "attacks": rows,
                "thresholds": {"gain": STRONGER_GAIN, "share": STRONGER_SHARE}}
    if firing:
        top = max(firing, key=lambda r: r["overstated_by"])
        said = "; ".join(f"{r['attacks']} alone would have overstated robustness by {_points(r['overstated_by'])} "
                         f"points ({r['accuracy']:.1%} against {worst:.1%})" for r in firing)
        return Diagnostic(name, True, f"At eps {eps:g}: {said}. The other attacks break "
                          f"{top['share_broken_by_others']:.0%} of what {top['attacks']} left, so its loss is being "
                          "masked.", evidence,
                          "Report only the per-sample worst case, and add attacks with other losses and starts "
                          "(targeted, on the logits, black-box) until the worst case stops falling.")
    most = max(rows, key=lambda r: r["overstated_by"])
    return Diagnostic(name, False, f"At eps {eps:g} every iterative attack is within {_points(most['overstated_by'])} "
                      f"points of the worst case ({worst:.1%}).", evidence)


def effort_eps(outcomes: Mapping[float, Sequence[AttackOutcome]], floor: float = 0.05) -> float | None:
    """The largest eps at which the suite's worst case still leaves more than `floor` of the samples (else
    the smallest positive eps): where more effort could still show."""
    eps_list = sorted(e for e in outcomes if e > 0)
    if not eps_list:
        return None
    for e in reversed(eps_list):
        if _share(torch.stack([o.robust for o in outcomes[e]]).all(0)) > floor:
            return e
    return eps_list[0]


def masking_diagnostics(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                        outcomes: Mapping[float, Sequence[AttackOutcome]], clean: torch.Tensor, steps: int = 40,
                        effort_n: int = 200, effort_restarts: int = 5, seed: int = 0, batch_size: int | BatchSize = 256,
                        device: torch.device | str = "cpu") -> list[Diagnostic]:
    """The four checks of this module on one model. outcomes: eps -> the suite's per-sample results;
    clean: per-sample clean correctness. The restart/step check runs on the first effort_n samples
    (0 skips it); the stronger-attack check reports the eps where a weaker attack overstates most."""
    positive = {e: o for e, o in outcomes.items() if e > 0 and o}
    if not positive:
        return []
    batch_size = as_batch_size(batch_size)
    top = max(positive)
    stronger = [check_stronger_attack(o, e) for e, o in sorted(positive.items())]
    fired = [d for d in stronger if d.fired]
    diagnostics = [check_single_step_gap(positive, clean),
                   check_saturation(model, x, y, top, batch_size, device),
                   max(fired, key=lambda d: max(r["overstated_by"] for r in d.evidence["attacks"]))
                   if fired else stronger[-1]]
    at = effort_eps(positive)
    if effort_n and at is not None and not math.isinf(at):
        diagnostics.insert(2, check_more_effort(model, x[:effort_n], y[:effort_n], at, steps, effort_restarts,
                                                seed=seed, batch_size=batch_size, device=device))
    return diagnostics
