"""Box-constrained L-BFGS (Szegedy et al. 2014, "Intriguing properties of neural networks", sec. 4.1):
minimize c * |r|^2 + loss_f(x + r, l) subject to x + r in [0, 1], with a search over the trade-off
constant for the smallest perturbation that still reaches class l.

We write it in the equivalent form |r|^2 + c' * loss (c' = 1 / c) and bisect c' per sample: the
smallest c' whose minimizer succeeds gives the smallest distortion. Targeted: loss = cross-entropy
of the target (the paper's setting). Untargeted: loss = -log(1 - p_y), which vanishes as the true
class loses its probability. The minimization is SciPy's L-BFGS-B with the [0, 1] box as bounds,
run jointly on the (separable) sum over the batch.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import Bounds, minimize
from torch import nn

from advlab.attacks.base import Attack, Cost
from advlab.attacks.common import check_positive_int, is_adversarial, search_constant
from advlab.errors import check_range


def _class_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    if target is not None:
        return F.cross_entropy(logits, target, reduction="none")
    others = logits.scatter(1, y[:, None], float("-inf")).logsumexp(1)
    return logits.logsumexp(1) - others  # = -log(1 - p_y)


class LBFGS(Attack):
    """Szegedy et al.'s box-constrained L-BFGS attack with a per-sample bisection over the constant."""

    name = "lbfgs"

    def __init__(self, initial_const: float = 1.0, binary_search_steps: int = 6, max_iter: int = 100) -> None:
        self.initial_const = check_range(initial_const, "initial_const", 0.0, 1e10, lo_open=True)
        self.binary_search_steps = check_positive_int(binary_search_steps, "binary_search_steps")
        self.max_iter = check_positive_int(max_iter, "max_iter")

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                cost: Cost) -> torch.Tensor:
        n, dev = len(x), x.device
        best_l2 = torch.full((n,), math.inf, device=dev)
        best_adv = x.clone()

        def stage(const: torch.Tensor) -> torch.Tensor:
            adv = self._minimize(model, x, y, target, const, cost)
            with torch.no_grad():
                ok = is_adversarial(model(adv), y, target)
            cost.forward += n
            l2 = (adv - x).flatten(1).norm(dim=1)
            better = ok & (l2 < best_l2)
            best_l2[better] = l2[better]
            best_adv[better] = adv[better]
            return ok

        search_constant(self.initial_const, self.binary_search_steps, n, dev, stage)
        return best_adv

    def _minimize(self, model, x, y, target, const, cost) -> torch.Tensor:
        shape, dtype = x.shape, x.dtype
        x0 = x.detach().cpu().double().numpy().ravel()

        def objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
            with torch.enable_grad():
                z = torch.from_numpy(flat).to(x.device, dtype).view(shape).requires_grad_(True)
                dist = (z - x).flatten(1).pow(2).sum(1)
                loss = (dist + const * _class_loss(model(z), y, target)).sum()
                (grad,) = torch.autograd.grad(loss, z)
            cost.forward += len(x)
            cost.backward += len(x)
            return float(loss.detach()), grad.detach().cpu().double().numpy().ravel()

        found = minimize(objective, x0, jac=True, method="L-BFGS-B", bounds=Bounds(0.0, 1.0),
                         options={"maxiter": self.max_iter})
        return torch.from_numpy(found.x).to(x.device, dtype).view(shape).clamp(0.0, 1.0)
