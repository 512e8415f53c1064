"""Momentum iterative FGSM (Dong et al. 2018, "Boosting adversarial attacks with momentum",
Algorithm 1): g_{t+1} = mu * g_t + grad / ||grad||_1;  x_{t+1} = clip(x_t + alpha * sign(g_{t+1})).

With ``diversity > 0`` it is M-DI2-FGSM (Xie et al. 2019, "Improving transferability of adversarial
examples with input diversity", Sec. 3): with that probability per step the gradient is taken at a
randomly shrunk and randomly zero-padded copy of the current point (``input_diversity``), which
keeps the perturbation from fitting one model's exact pixel grid and so transfers better.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from advlab.attacks.base import Attack, Cost, ThreatModel
from advlab.attacks.common import batch_view, check_loss, check_positive_int, loss_gradient, steepest_ascent
from advlab.errors import check_range


def input_diversity(x: torch.Tensor, probability: float, min_scale: float, generator: torch.Generator | None = None
                    ) -> torch.Tensor:
    """With the given probability, x resized (nearest) to a random side in [min_scale * H, H] and
    zero-padded back to H x W at a random offset (Xie et al. 2019's transform, shrinking instead of
    enlarging so that fixed-size models still take it); else x unchanged. Differentiable in x."""
    if probability <= 0 or float(torch.rand((), generator=generator)) >= probability:
        return x
    h, w = x.shape[-2:]
    side_h = int(torch.randint(max(1, int(min_scale * h)), h + 1, (), generator=generator))
    side_w = max(1, round(side_h * w / h))
    small = F.interpolate(x, size=(side_h, side_w), mode="nearest")
    top = int(torch.randint(0, h - side_h + 1, (), generator=generator))
    left = int(torch.randint(0, w - side_w + 1, (), generator=generator))
    return F.pad(small, (left, w - side_w - left, top, h - side_h - top))


class MIFGSM(Attack):
    """MI-FGSM with decay mu (1.0 in the paper) and step alpha = eps / steps (the paper's choice);
    diversity: probability of the input-diversity transform per step (0: plain MI-FGSM; Xie et al.
    use 0.5), min_scale: the smallest shrink factor of that transform."""

    name = "mifgsm"

    def __init__(self, eps: float = 0.3, steps: int = 10, decay: float = 1.0, step_size: float | None = None,
                 norm: str = "linf", loss: str = "ce", diversity: float = 0.0, min_scale: float = 0.8,
                 seed: int = 0) -> None:
        self.threat = ThreatModel(norm, eps)
        self.norm, self.eps = self.threat.norm, self.threat.eps
        self.steps = check_positive_int(steps, "steps")
        self.decay = check_range(decay, "decay", 0.0, 1e3)
        self.step_size = self.eps / self.steps if step_size is None else check_range(step_size, "step_size", 0, 1e6)
        self.loss = check_loss(loss)
        self.diversity = check_range(diversity, "diversity", 0.0, 1.0)
        self.min_scale = check_range(min_scale, "min_scale", 0.0, 1.0, lo_open=True)
        self.seed = int(seed)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                cost: Cost) -> torch.Tensor:
        adv = x.clone()
        momentum = torch.zeros_like(x)
        generator = torch.Generator().manual_seed(self.seed)

        def seen(z: torch.Tensor) -> torch.Tensor:  # the model behind the (optional) diversity transform
            return model(input_diversity(z, self.diversity, self.min_scale, generator))

        for _ in range(self.steps):
            grad, _, _ = loss_gradient(seen, adv, y, target, self.loss, cost)
            l1 = grad.abs().flatten(1).sum(1).clamp_min(1e-12)
            momentum = self.decay * momentum + grad / batch_view(l1, grad)
            adv = self.threat.project(adv + self.step_size * steepest_ascent(momentum, self.norm), x)
        return self.threat.enforce(adv, x)
