"""Attacks on autoencoders: a perturbed natural image that reconstructs as an entirely different target.

Two objectives, as in the lecture's "attacking autoencoders" slide:

* latent: match the target's code, min ||enc(x + d) - enc(x_t)||^2 (Tabacof, Tavares and Valle
  2016, eq. 1; Kos, Fischer and Song 2017, the "latent attack", eq. 4);
* output: match the target's reconstruction, min ||AE(x + d) - AE(x_t)||^2 (Kos et al. 2017's
  output attack, section 3.3).

Each with the perturbation either bounded (||d|| <= eps in Linf or L2, projected gradient steps, the
box [0, 1] kept) or penalized (min objective + lambda ||d||_2^2 with Adam, Tabacof et al.'s
trade-off, the box kept by projection). The autoencoder is a plain nn.Module mapping images in
[0, 1] to reconstructions; latent attacks also need its ``encode``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import kornia.metrics
import torch
from torch import nn

from advlab.attacks.base import Cost, ThreatModel, attack_mode, check_norm, perturbation_norms
from advlab.errors import AdvlabError, check_images, check_range

MODES = ("latent", "output")


def reconstruction_similarity(images: torch.Tensor, target: torch.Tensor, window: int = 7) -> dict[str, torch.Tensor]:
    """Per-sample MSE (mean over pixels) and SSIM (Wang et al. 2004, mean of the SSIM map with a
    Gaussian window, kornia.metrics.ssim) between two batches in [0, 1]."""
    mse = (images - target).pow(2).flatten(1).mean(1)
    ssim = kornia.metrics.ssim(images.clamp(0, 1), target.clamp(0, 1), window).flatten(1).mean(1)
    return {"mse": mse, "ssim": ssim}


@dataclass
class AutoencoderAttackResult:
    """Perturbed sources, their reconstructions, and how close those came to the targets."""

    source: torch.Tensor
    adv: torch.Tensor
    reconstruction: torch.Tensor  # AE(adv)
    target: torch.Tensor
    target_reconstruction: torch.Tensor  # AE(target)
    norms: dict[str, torch.Tensor]
    cost: Cost
    to_target: dict[str, torch.Tensor]  # reconstruction vs target image: mse, ssim
    to_source: dict[str, torch.Tensor]  # reconstruction vs source image: mse, ssim
    extra: dict = field(default_factory=dict)

    def summary(self) -> dict:
        mean = {f"{k}_mean": v.mean().item() for k, v in self.norms.items()}
        return {"n": len(self.adv), **mean, "mse_to_target": self.to_target["mse"].mean().item(),
                "ssim_to_target": self.to_target["ssim"].mean().item(),
                "mse_to_source": self.to_source["mse"].mean().item(),
                "ssim_to_source": self.to_source["ssim"].mean().item(), "cost": self.cost.to_dict()}


class AutoencoderAttack:
    """Make ``x`` reconstruct as ``x_target``: ``AutoencoderAttack("latent", eps=0.2)(ae, x, x_target)``.

    mode: "latent" (match enc(x_target)) or "output" (match AE(x_target)).
    Bounded (penalty None): projected gradient descent on the objective, steps of step_size
    (default 2.5 eps / steps) along sign(grad) (Linf) or grad / ||grad||_2 (L2), keeping each
    sample's best iterate. Penalized (penalty = lambda > 0): Adam (learning rate step_size, default
    0.01) on objective + lambda ||d||_2^2 in the box; eps, if given, still bounds d.
    """

    name = "autoencoder"

    def __init__(self, mode: str = "latent", eps: float | None = 0.1, norm: str = "linf", steps: int = 100,
                 step_size: float | None = None, penalty: float | None = None, random_start: bool = False,
                 seed: int = 0) -> None:
        if mode not in MODES:
            raise AdvlabError(f"unknown autoencoder attack mode {mode!r}; choose one of {', '.join(MODES)}")
        if eps is None and penalty is None:
            raise AdvlabError("give a budget eps (bounded attack) or a penalty lambda (penalized attack)")
        if int(steps) != steps or steps < 1:
            raise AdvlabError(f"steps must be a positive integer, got {steps}")
        self.threat = ThreatModel(norm, eps) if eps is not None else None
        if penalty is not None:
            check_range(penalty, "penalty lambda", 0.0, 1e6)
        self.mode, self.norm, self.eps, self.steps, self.penalty = mode, norm, eps, int(steps), penalty
        self.random_start, self.seed = random_start, seed
        if step_size is None:
            step_size = 0.01 if penalty is not None else 2.5 * eps / steps
        self.step_size = check_range(step_size, "step size", 0.0, 1e3, lo_open=True)

    def objective(self, autoencoder: nn.Module, adv: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """Per-sample squared distance to the goal (the target's code or reconstruction)."""
        out = autoencoder.encode(adv) if self.mode == "latent" else autoencoder(adv)
        return (out - goal).pow(2).flatten(1).sum(1)

    def __call__(self, autoencoder: nn.Module, x: torch.Tensor, x_target: torch.Tensor) -> AutoencoderAttackResult:
        check_images(x, "source images")
        check_images(x_target, "target images")
        if x.shape != x_target.shape:
            raise AdvlabError(f"source and target batches must have the same shape, got {tuple(x.shape)} and "
                              f"{tuple(x_target.shape)}")
        if self.mode == "latent" and not hasattr(autoencoder, "encode"):
            raise AdvlabError("a latent attack needs the autoencoder's encode(x); use mode='output'")
        cost = Cost()
        with attack_mode(autoencoder):
            with torch.no_grad():
                goal = autoencoder.encode(x_target) if self.mode == "latent" else autoencoder(x_target)
            adv = self._penalized(autoencoder, x, goal, cost) if self.penalty is not None else \
                self._bounded(autoencoder, x, goal, cost)
            with torch.no_grad():
                recon = autoencoder(adv)
                target_recon = autoencoder(x_target)
                final = self.objective(autoencoder, adv, goal)
        return AutoencoderAttackResult(x, adv, recon, x_target, target_recon, perturbation_norms(adv, x), cost,
                                       reconstruction_similarity(recon, x_target),
                                       reconstruction_similarity(recon, x),
                                       {"objective": final, "mode": self.mode})

    def _gradient(self, autoencoder, adv, goal, cost, x=None):
        adv = adv.detach().requires_grad_(True)
        loss = self.objective(autoencoder, adv, goal)
        total = loss.sum()
        if x is not None:
            total = total + self.penalty * (adv - x).pow(2).sum()
        grad, = torch.autograd.grad(total, adv)
        cost.forward += 1
        cost.backward += 1
        return loss.detach(), grad

    def _bounded(self, autoencoder, x, goal, cost) -> torch.Tensor:
        adv = x.clone()
        if self.random_start:
            gen = torch.Generator(device="cpu").manual_seed(self.seed)  # the same start on every device
            adv = self.threat.project(x + self.threat.random_delta(x.cpu(), gen).to(x.device), x)
        best = adv.clone()
        best_loss = torch.full((len(x),), float("inf"), device=x.device)
        view = (-1,) + (1,) * (x.dim() - 1)
        for _ in range(self.steps):
            loss, grad = self._gradient(autoencoder, adv, goal, cost)
            better = loss < best_loss
            best[better], best_loss[better] = adv[better], loss[better]
            if self.norm == "linf":
                step = grad.sign()
            else:
                step = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(view)
            adv = self.threat.project(adv - self.step_size * step, x).detach()
        with torch.no_grad():
            loss = self.objective(autoencoder, adv, goal)
        cost.forward += 1
        better = loss < best_loss
        best[better] = adv[better]
        return self.threat.enforce(best, x)

    def _penalized(self, autoencoder, x, goal, cost) -> torch.Tensor:
        adv = x.clone()
        delta = torch.zeros_like(x, requires_grad=True)
        optimizer = torch.optim.Adam([delta], lr=self.step_size)
        for _ in range(self.steps):
            adv = x + delta
            total = self.objective(autoencoder, adv, goal).sum() + self.penalty * delta.pow(2).sum()
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
            cost.forward += 1
            cost.backward += 1
            with torch.no_grad():
                projected = self.threat.project(x + delta, x) if self.threat else (x + delta).clamp(0, 1)
                delta.copy_(projected - x)
        adv = (x + delta).detach()
        return self.threat.enforce(adv, x) if self.threat else adv


def random_perturbation_like(adv: torch.Tensor, x: torch.Tensor, norm: str = "linf",
                             generator: torch.Generator | None = None) -> torch.Tensor:
    """Random noise of the same per-sample size as adv - x (its Linf or L2 norm), in the box.

    The baseline an attack must beat: random signs scaled to the Linf norm, or a random Gaussian
    direction scaled to the L2 norm.
    """
    check_norm(norm)
    delta = adv - x
    view = (-1,) + (1,) * (x.dim() - 1)
    if norm == "linf":
        size = delta.flatten(1).abs().amax(1).view(view)
        noise = (torch.randint(0, 2, x.shape, generator=generator).float() * 2 - 1).to(x.device) * size
    else:
        size = delta.flatten(1).norm(dim=1).view(view)
        direction = torch.randn(x.shape, generator=generator).to(x.device)
        noise = direction / direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(view) * size
    return (x + noise).clamp(0, 1)


def pair_with_targets(labels: torch.Tensor, pool_labels: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """For each source label, the index of a random pool image of another class (a fixed draw)."""
    gen = torch.Generator().manual_seed(seed)
    picks = []
    for label in labels.tolist():
        candidates = (pool_labels != label).nonzero().flatten()
        if len(candidates) == 0:
            raise AdvlabError("the target pool holds no image of another class")
        picks.append(candidates[torch.randint(len(candidates), (1,), generator=gen)].item())
    return torch.tensor(picks, dtype=torch.long)


@torch.no_grad()
def budget_sweep(autoencoder: nn.Module, classifier: nn.Module | None, x: torch.Tensor, x_target: torch.Tensor,
                 y_target: torch.Tensor | None, budgets: list[float], mode: str = "latent", norm: str = "linf",
                 steps: int = 100, seed: int = 0) -> tuple[list[dict], dict[float, AutoencoderAttackResult]]:
    """For each budget eps: input distortion, reconstruction-to-target MSE and SSIM (attack and
    same-size random noise), and the share of reconstructions a separate classifier assigns to the
    target's class (the measurement of Kos et al. 2017, section 4)."""
    rows, results = [], {}
    gen = torch.Generator().manual_seed(seed)
    for eps in budgets:
        with torch.enable_grad():
            result = AutoencoderAttack(mode, eps=eps, norm=norm, steps=steps, seed=seed)(autoencoder, x, x_target)
        noisy = random_perturbation_like(result.adv, x, norm, gen)
        with attack_mode(autoencoder):
            noise_sim = reconstruction_similarity(autoencoder(noisy), x_target)
        row = {"eps": eps, "linf": result.norms["linf"].mean().item(), "l2": result.norms["l2"].mean().item(),
               "mse_to_target": result.to_target["mse"].mean().item(),
               "ssim_to_target": result.to_target["ssim"].mean().item(),
               "noise_mse_to_target": noise_sim["mse"].mean().item(),
               "noise_ssim_to_target": noise_sim["ssim"].mean().item()}
        if classifier is not None and y_target is not None:
            with attack_mode(classifier):
                read = classifier(result.reconstruction).argmax(1)
                row["target_class_rate"] = (read == y_target).float().mean().item()
        rows.append(row)
        results[eps] = result
    return rows, results
