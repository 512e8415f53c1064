"""Projected gradient descent (Madry et al. 2018, "Towards deep learning models resistant to
adversarial attacks", eq. 2) and the basic iterative method (Kurakin, Goodfellow & Bengio 2016,
"Adversarial examples in the physical world", sec. 2.2): repeated steepest-ascent steps of the loss,
each projected back onto the eps-ball and the [0, 1] box.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from advlab.attacks.base import Attack, Cost, ThreatModel
from advlab.attacks.common import (
    attack_loss,
    check_loss,
    check_positive_int,
    is_adversarial,
    loss_gradient,
    steepest_ascent,
)
from advlab.errors import check_range


def ascend(model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, threat: ThreatModel,
           adv: torch.Tensor, steps: int, step_size: float, loss: str, cost: Cost) -> torch.Tensor:
    """The PGD loop, for the attacks and the adversarial-training losses alike: from adv, `steps`
    steepest-ascent steps of size step_size on the objective, each projected onto the threat model.

    Linf, the hot loop: one forward and one backward pass per step, then 3 in-place passes over the
    batch (sign and step, clip to the precomputed intersection of the ball and the box).
    """
    if threat.norm == "linf":
        lo, hi = threat.bounds(x)
        for _ in range(steps):
            grad, _, _ = loss_gradient(model, adv, y, target, loss, cost)
            adv = threat.clip(adv.add(grad.sign_(), alpha=step_size), lo, hi)
        return adv
    for _ in range(steps):
        grad, _, _ = loss_gradient(model, adv, y, target, loss, cost)
        adv = threat.project(adv + step_size * steepest_ascent(grad, threat.norm), x)
    return adv


class PGD(Attack):
    """PGD under Linf or L2, with random start, restarts and a choice of loss.

    - step_size defaults to 2.5 * eps / steps (Madry et al.: enough to cross the ball and back).
    - restarts > 1 reruns the attack from fresh random starts on the samples not yet broken and keeps,
      per sample, the best run: a successful one, else the one with the highest final loss.
    - loss: "ce" (cross-entropy) or "cw" (the logit margin of Carlini & Wagner 2017).
    - early_stop: freeze a sample as soon as its iterate is adversarial (checked on the logits each step
      computes anyway, so it costs nothing). Robust accuracy is then never higher than with fixed steps,
      and far fewer passes are spent. Off by default, so the iteration count is the textbook one.
    - seed: makes the random start reproducible (a torch.Generator on the input's device).
    """

    name = "pgd"
    accepts_start = True

    def __init__(self, eps: float = 0.3, steps: int = 40, step_size: float | None = None, norm: str = "linf",
                 random_start: bool = True, restarts: int = 1, loss: str = "ce", early_stop: bool = False,
                 seed: int | None = None) -> None:
        self.threat = ThreatModel(norm, eps)
        self.norm, self.eps = self.threat.norm, self.threat.eps
        self.steps = check_positive_int(steps, "steps")
        self.step_size = (2.5 * self.eps / self.steps if step_size is None
                          else check_range(step_size, "step_size", 0.0, 1e6))
        self.random_start = bool(random_start)
        self.restarts = check_positive_int(restarts, "restarts")
        self.loss = check_loss(loss)
        self.early_stop = bool(early_stop)
        self.seed = seed

    def _generator(self, device: torch.device) -> torch.Generator | None:
        if self.seed is None:
            return None
        return torch.Generator(device=device).manual_seed(self.seed)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                cost: Cost, start: torch.Tensor | None = None) -> torch.Tensor:
        """start (optional): where the first run begins, projected onto the ball and the box; later
        restarts begin at random points as usual."""
        generator = self._generator(x.device)
        if start is not None:
            start = self.threat.project(start, x)
        if self.restarts == 1:
            adv, _ = self._run(model, x, y, target, cost, generator, evaluate=False, start=start)
            return self.threat.enforce(adv, x)
        best_adv = x.clone()
        best_success = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        best_objective = torch.full((len(x),), -math.inf, device=x.device)
        for run in range(self.restarts):
            todo = (~best_success).nonzero().squeeze(1)
            if len(todo) == 0:
                break
            t = target[todo] if target is not None else None
            first = start[todo] if start is not None and run == 0 else None
            adv, (success, objective) = self._run(model, x[todo], y[todo], t, cost, generator, evaluate=True,
                                                  start=first)
            better = (success & ~best_success[todo]) | ((success == best_success[todo])
                                                        & (objective > best_objective[todo]))
            keep = todo[better]
            best_adv[keep] = adv[better]
            best_success[keep] = success[better]
            best_objective[keep] = objective[better]
        return self.threat.enforce(best_adv, x)

    def _run(self, model, x, y, target, cost, generator, evaluate: bool, start: torch.Tensor | None = None):
        """One PGD run (from start if given). With evaluate, also returns (success, objective) of each
        final iterate."""
        alpha, threat = self.step_size, self.threat
        if start is not None:
            adv = start.clone()
        else:
            adv = threat.random_start(x, generator) if self.random_start else x.clone()
        if not self.early_stop:
            adv = ascend(model, x, y, target, threat, adv, self.steps, alpha, self.loss, cost)
            return adv, (self._evaluate(model, adv, y, target, cost) if evaluate else None)
        done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        objective = torch.full((len(x),), -math.inf, device=x.device)
        active = torch.arange(len(x), device=x.device)
        for _ in range(self.steps):
            t = target[active] if target is not None else None
            grad, logits, obj = loss_gradient(model, adv[active], y[active], t, self.loss, cost)
            hit = is_adversarial(logits, y[active], t)
            done[active[hit]] = True
            objective[active[hit]] = obj[hit]
            keep = ~hit
            active, grad = active[keep], grad[keep]
            if len(active) == 0:
                break
            adv[active] = threat.project(adv[active] + alpha * steepest_ascent(grad, threat.norm), x[active])
        if not evaluate:
            return adv, None
        if len(active):
            t = target[active] if target is not None else None
            success, obj = self._evaluate(model, adv[active], y[active], t, cost)
            done[active] = success
            objective[active] = obj
        return adv, (done, objective)

    def _evaluate(self, model, adv, y, target, cost):
        with torch.no_grad():
            logits = model(adv)
        cost.forward += len(adv)
        return is_adversarial(logits, y, target), attack_loss(logits, y, target, self.loss)


class BIM(PGD):
    """Basic iterative method (Kurakin et al. 2016): PGD without random start.

    Defaults follow the paper: step alpha = 1/255 and min(eps*255 + 4, 1.25 * eps*255) steps.
    """

    name = "bim"

    def __init__(self, eps: float = 0.3, steps: int | None = None, step_size: float | None = None,
                 norm: str = "linf", loss: str = "ce", early_stop: bool = False) -> None:
        eps_255 = float(eps) * 255
        if steps is None:
            steps = max(1, int(math.ceil(min(eps_255 + 4, 1.25 * eps_255))))
        super().__init__(eps=eps, steps=steps, step_size=1 / 255 if step_size is None else step_size, norm=norm,
                         random_start=False, restarts=1, loss=loss, early_stop=early_stop)
