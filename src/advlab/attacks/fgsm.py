"""Fast gradient sign method (Goodfellow, Shlens & Szegedy 2015, "Explaining and harnessing
adversarial examples", eq. 3): x' = x + eps * sign(grad_x J(theta, x, y)), the panda-to-gibbon step.
"""

from __future__ import annotations

import torch
from torch import nn

from advlab.attacks.base import Attack, Cost, ThreatModel
from advlab.attacks.common import check_loss, loss_gradient, steepest_ascent


class FGSM(Attack):
    """One gradient step of size eps in the steepest-ascent direction of the norm.

    norm="linf" is the paper's sign step; norm="l2" the fast gradient method x + eps * g / ||g||.
    Targeted (target given): one step *down* the cross-entropy of the target class.
    The result is clipped to [0, 1] (the paper's MNIST numbers were not clipped).
    """

    name = "fgsm"

    def __init__(self, eps: float = 0.3, norm: str = "linf", loss: str = "ce") -> None:
        self.threat = ThreatModel(norm, eps)
        self.norm, self.eps = self.threat.norm, self.threat.eps
        self.loss = check_loss(loss)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                cost: Cost) -> torch.Tensor:
        grad, _, _ = loss_gradient(model, x, y, target, self.loss, cost)
        return self.threat.project(x + self.eps * steepest_ascent(grad, self.norm), x)
