"""Momentum iterative FGSM (Dong et al. 2018, "Boosting adversarial attacks with momentum",
Algorithm 1): g_{t+1} = mu * g_t + grad / ||grad||_1;  x_{t+1} = clip(x_t + alpha * sign(g_{t+1})).
"""

from __future__ import annotations

import torch
from torch import nn

from advlab.attacks.base import NORMS, Attack, Cost
from advlab.attacks.common import (
    batch_view,
    check_eps,
    check_loss,
    check_positive_int,
    enforce_bound,
    loss_gradient,
    project,
    steepest_ascent,
)
from advlab.errors import AdvlabError, check_range


class MIFGSM(Attack):
    """MI-FGSM with decay mu (1.0 in the paper) and step alpha = eps / steps (the paper's choice)."""

    name = "mifgsm"

    def __init__(self, eps: float = 0.3, steps: int = 10, decay: float = 1.0, step_size: float | None = None,
                 norm: str = "linf", loss: str = "ce") -> None:
        if norm not in NORMS:
            raise AdvlabError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")
        self.norm = norm
        self.eps = check_eps(eps, norm)
        self.steps = check_positive_int(steps, "steps")
        self.decay = check_range(decay, "decay", 0.0, 1e3)
        self.step_size = self.eps / self.steps if step_size is None else check_range(step_size, "step_size", 0, 1e6)
        self.loss = check_loss(loss)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                cost: Cost) -> torch.Tensor:
        adv = x.clone()
        momentum = torch.zeros_like(x)
        for _ in range(self.steps):
            grad, _, _ = loss_gradient(model, adv, y, target, self.loss, cost)
            l1 = grad.abs().flatten(1).sum(1).clamp_min(1e-12)
            momentum = self.decay * momentum + grad / batch_view(l1, grad)
            adv = project(adv + self.step_size * steepest_ascent(momentum, self.norm), x, self.eps, self.norm)
        return enforce_bound(adv, x, self.eps, self.norm)
