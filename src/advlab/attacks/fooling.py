"""Fooling ("rubbish class") images (Goodfellow, Shlens & Szegedy 2015, sec. 11; the lecture's
"airplane" grid): start from pure noise, take one or a few signed-gradient steps toward a class, and
count how often the model then names that class with more than 50% confidence.

The paper reports 93.4% of Gaussian-noise inputs classified with > 50% confidence on CIFAR-10.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from advlab.attacks.base import Cost, attack_mode
from advlab.attacks.common import check_positive_int, loss_gradient, steepest_ascent
from advlab.errors import AdvlabError, check_range

NOISES = ("gaussian", "uniform")


@dataclass
class FoolingResult:
    images: torch.Tensor  # (num_classes * per_class, C, H, W), in [0, 1]
    target: torch.Tensor  # the class each image was pushed toward
    confidence: torch.Tensor  # the model's probability of that class
    predicted: torch.Tensor
    threshold: float
    cost: Cost

    @property
    def fooled(self) -> torch.Tensor:
        """Predicted as the target class with probability above the threshold."""
        return (self.predicted == self.target) & (self.confidence > self.threshold)

    @property
    def share(self) -> float:
        return self.fooled.float().mean().item()

    def share_per_class(self) -> dict[int, float]:
        return {int(c): self.fooled[self.target == c].float().mean().item() for c in self.target.unique()}

    def summary(self) -> dict:
        return {"n": len(self.target), "threshold": self.threshold, "share_fooled": self.share,
                "share_per_class": {str(k): v for k, v in self.share_per_class().items()},
                "mean_confidence": self.confidence.mean().item(), "cost": self.cost.to_dict()}


class FoolingImages:
    """Noise pushed toward each class by `steps` signed-gradient steps of size eps / steps.

    noise="gaussian": N(0.5, sigma^2) per pixel, clipped to [0, 1]; "uniform": U(0, 1).
    """

    name = "fooling"

    def __init__(self, eps: float = 0.25, steps: int = 1, noise: str = "gaussian", sigma: float = 0.25,
                 threshold: float = 0.5, seed: int = 0) -> None:
        if noise not in NOISES:
            raise AdvlabError(f"unknown noise {noise!r}; choose one of {', '.join(NOISES)}")
        self.eps = check_range(eps, "eps", 0.0, 1.0)
        self.steps = check_positive_int(steps, "steps")
        self.noise = noise
        self.sigma = check_range(sigma, "sigma", 0.0, 10.0)
        self.threshold = check_range(threshold, "threshold", 0.0, 1.0)
        self.seed = seed

    def start(self, n: int, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed)
        if self.noise == "uniform":
            x = torch.rand((n, *shape), generator=gen)
        else:
            x = (0.5 + self.sigma * torch.randn((n, *shape), generator=gen)).clamp(0.0, 1.0)
        return x.to(device)

    def __call__(self, model: nn.Module, shape: tuple[int, int, int], num_classes: int = 10, per_class: int = 10,
                 device: torch.device | str | None = None) -> FoolingResult:
        if len(shape) != 3:
            raise AdvlabError(f"shape must be (channels, height, width), got {shape}")
        per_class = check_positive_int(per_class, "per_class")
        device = torch.device(device) if device is not None else next(model.parameters()).device
        target = torch.arange(num_classes, device=device).repeat_interleave(per_class)
        x = self.start(len(target), tuple(shape), device)
        cost = Cost()
        alpha = self.eps / self.steps
        with attack_mode(model):
            for _ in range(self.steps):
                grad, _, _ = loss_gradient(model, x, target, target, "ce", cost)
                x = (x + alpha * steepest_ascent(grad, "linf")).clamp(0.0, 1.0)
            with torch.no_grad():
                probs = model(x).softmax(1)
        predicted = probs.argmax(1)
        confidence = probs.gather(1, target[:, None]).squeeze(1)
        return FoolingResult(x.detach(), target, confidence, predicted, self.threshold, cost)
