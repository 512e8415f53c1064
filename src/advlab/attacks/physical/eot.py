"""Expectation over Transformation (Athalye, Engstrom, Ilyas and Kwok 2018, "Synthesizing robust
adversarial examples", eq. 1): PGD on the expected loss E_{t ~ T}[L(f(t(x')), y)] over a distribution
of transformations, estimated by sampling t afresh at every step; the expectation's gradient is the
mean of the sampled gradients. With PrintPhotoTransforms.identity() and one sample it is plain PGD.
"""

from __future__ import annotations

import torch
from torch import nn

from advlab.attacks.base import Attack, Cost, ThreatModel
from advlab.attacks.common import attack_loss, check_loss, check_positive_int, steepest_ascent
from advlab.attacks.physical.transforms import PrintPhotoTransforms
from advlab.errors import check_range


class EOTPGD(Attack):
    """PGD whose every gradient is the mean over ``samples`` transformed copies of the iterate.

    eps, steps, step_size (default 2.5 eps / steps), norm, random_start and loss are PGD's; the
    perturbation is projected onto the eps-ball (and [0, 1]) after every step, so the bound holds
    exactly as for PGD. transforms: the distribution T (default PrintPhotoTransforms()). seed fixes
    the random start and the sampled transformations. Success, as for every attack, is judged by
    the base class on the untransformed image; use measure_destruction or expected_success for
    the transformed ones.
    """

    name = "eot_pgd"

    def __init__(self, eps: float = 0.3, steps: int = 40, step_size: float | None = None, norm: str = "linf",
                 samples: int = 10, transforms: PrintPhotoTransforms | None = None, random_start: bool = True,
                 loss: str = "ce", seed: int | None = 0) -> None:
        self.threat = ThreatModel(norm, eps)
        self.norm, self.eps = self.threat.norm, self.threat.eps
        self.steps = check_positive_int(steps, "steps")
        self.samples = check_positive_int(samples, "samples")
        self.step_size = (2.5 * self.eps / self.steps if step_size is None
                          else check_range(step_size, "step_size", 0.0, 1e6))
        self.transforms = transforms if transforms is not None else PrintPhotoTransforms()
        self.random_start = bool(random_start)
        self.loss = check_loss(loss)
        self.seed = seed

    def expected_gradient(self, model: nn.Module, adv: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                          cost: Cost, generator: torch.Generator | None) -> torch.Tensor:
        """Monte-Carlo gradient of E_t[objective(model(t(adv)))] from `samples` draws per image."""
        n = adv.shape[0]
        with torch.enable_grad():
            adv = adv.detach().requires_grad_(True)
            copies = adv.repeat(self.samples, 1, 1, 1)
            logits = model(self.transforms(copies, generator))
            t = target.repeat(self.samples) if target is not None else None
            objective = attack_loss(logits, y.repeat(self.samples), t, self.loss)
            (grad,) = torch.autograd.grad(objective.sum() / self.samples, adv)
        cost.forward += n * self.samples
        cost.backward += n * self.samples
        return grad

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                cost: Cost) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed) if self.seed is not None else None
        adv = self.threat.random_start(x, None if x.is_cuda else generator) if self.random_start else x.clone()
        for _ in range(self.steps):
            grad = self.expected_gradient(model, adv, y, target, cost, generator)
            adv = self.threat.project(adv + self.step_size * steepest_ascent(grad, self.norm), x)
        return self.threat.enforce(adv, x)


@torch.no_grad()
def expected_success(model: nn.Module, adv: torch.Tensor, y: torch.Tensor, transforms: PrintPhotoTransforms,
                     draws: int = 10, target: torch.Tensor | None = None, seed: int = 1) -> torch.Tensor:
    """Per image, the share of `draws` sampled transformations under which adv stays adversarial."""
    generator = torch.Generator().manual_seed(seed)
    hits = torch.zeros(len(adv), device=adv.device)
    for _ in range(draws):
        pred = model(transforms(adv, generator)).argmax(1)
        hits += (pred == target) if target is not None else (pred != y)
    return hits / draws
