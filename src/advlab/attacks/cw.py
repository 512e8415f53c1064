"""Carlini & Wagner L2 attack (Carlini & Wagner 2017, "Towards evaluating the robustness of neural
networks", sec. V-A): minimize ||delta||_2^2 + c * f(x + delta) with
f = max(Z_y - max_{j!=y} Z_j, -kappa) (untargeted) or max(max_{j!=t} Z_j - Z_t, -kappa) (targeted, their
f_6), by Adam, with a binary search over c per sample and the smallest successful iterate kept.

The box. The paper enforces x + delta in [0, 1] by the change of variables x + delta =
(tanh(w) + 1) / 2. A pixel that sits exactly at 0 or 1 (most of an MNIST image) then needs
w = -inf or +inf; implementations clip it to about +-atanh(1 - 1e-6), where tanh' is ~1e-6, so that
pixel barely moves in 100 Adam steps: the attack must work with the few pixels in between, which is
why peer implementations reach low success at 100 steps on MNIST. Here the optimization runs in
pixel space and each Adam step is followed by clipping to [0, 1] (projected gradient): a pixel at 0
can move up at the full step size from the first iteration. bench/whitebox.py measures the effect.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from advlab.attacks.base import Attack, Cost
from advlab.attacks.common import check_positive_int, is_adversarial, margin, search_constant
from advlab.errors import check_range


def cw_objective(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, kappa: float) -> torch.Tensor:
    """The clamped margin f_6: zero or below once the goal is reached with confidence kappa."""
    if target is None:
        return margin(logits, y).clamp_min(-kappa)
    return (-margin(logits, target)).clamp_min(-kappa)


class CarliniWagnerL2(Attack):
    """C&W L2 with binary search over c, confidence kappa, early abort, projected Adam in pixel space.

    - steps: Adam iterations per value of c; binary_search_steps: values of c tried per sample.
    - initial_const: first c; after a success c is bisected down, after a failure bisected up
      (times 10 while no success was ever seen), as in the authors' code.
    - abort_early: a sample leaves the current search step when its loss has not dropped by 0.01%
      over the last steps // 10 iterations (the authors abort the whole batch; per sample is tighter).
    """

    name = "cw"

    def __init__(self, steps: int = 100, binary_search_steps: int = 5, initial_const: float = 1.0,
                 kappa: float = 0.0, lr: float = 0.01, abort_early: bool = True) -> None:
        self.steps = check_positive_int(steps, "steps")
        self.binary_search_steps = check_positive_int(binary_search_steps, "binary_search_steps")
        self.initial_const = check_range(initial_const, "initial_const", 0.0, 1e10, lo_open=True)
        self.kappa = check_range(kappa, "kappa (confidence)", 0.0, 1e6)
        self.lr = check_range(lr, "lr", 0.0, 10.0, lo_open=True)
        self.abort_early = bool(abort_early)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                cost: Cost) -> torch.Tensor:
        n, dev = len(x), x.device
        best_l2 = torch.full((n,), math.inf, device=dev)
        best_adv = x.clone()
        search_constant(self.initial_const, self.binary_search_steps, n, dev,
                        lambda const: self._search_step(model, x, y, target, const, best_l2, best_adv, cost))
        return best_adv

    def _search_step(self, model, x, y, target, const, best_l2, best_adv, cost) -> torch.Tensor:
        """Adam from x for every sample at its own c; updates best_l2/best_adv in place.

        The optimizer state is kept compact for the samples still running (no scatter per step): when
        samples abort, the arrays are simply filtered, since only their best iterate matters after."""
        n, dev = len(x), x.device
        b1, b2, eps_adam = 0.9, 0.999, 1e-8
        success = torch.zeros(n, dtype=torch.bool, device=dev)
        idx = torch.arange(n, device=dev)
        xa, ya, ta, ca = x, y, target, const
        adv = x.clone()
        m = torch.zeros_like(x)
        v = torch.zeros_like(x)
        check_every = max(1, self.steps // 10)
        prev_loss = torch.full((n,), math.inf, device=dev)
        for step in range(1, self.steps + 1):
            with torch.enable_grad():
                z = adv.requires_grad_(True)
                logits = model(z)
                l2sq = (z - xa).flatten(1).pow(2).sum(1)
                loss = l2sq + ca * cw_objective(logits, ya, ta, self.kappa)
                (grad,) = torch.autograd.grad(loss.sum(), z)
            cost.forward += len(idx)
            cost.backward += len(idx)
            z, logits, loss, l2sq = z.detach(), logits.detach(), loss.detach(), l2sq.detach()
            # Record the iterate just evaluated if it is adversarial with confidence kappa and the smallest
            # so far (as in the authors' code, a success must clear the margin kappa, not just flip argmax).
            goal = margin(logits, ta) if ta is not None else -margin(logits, ya)
            hit = is_adversarial(logits, ya, ta) & (goal >= self.kappa)
            l2 = l2sq.sqrt()
            success[idx[hit]] = True
            better = hit & (l2 < best_l2[idx])
            if better.any():
                where = idx[better]
                best_l2[where] = l2[better]
                best_adv[where] = z[better]
            # Projected Adam step.
            m.mul_(b1).add_(grad, alpha=1 - b1)
            v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
            step_size = self.lr * math.sqrt(1 - b2**step) / (1 - b1**step)
            adv = z.addcdiv_(m, v.sqrt().add_(eps_adam), value=-step_size).clamp_(0.0, 1.0)
            if self.abort_early and step % check_every == 0:
                keep = loss <= prev_loss * 0.9999
                prev_loss = loss
                if not keep.all():
                    if not keep.any():
                        break
                    idx, xa, ya, ca, prev_loss = idx[keep], xa[keep], ya[keep], ca[keep], prev_loss[keep]
                    ta = ta[keep] if ta is not None else None
                    adv, m, v = adv[keep], m[keep], v[keep]
        return success
