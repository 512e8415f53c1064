"""Pieces the white-box attacks share: losses on logits, input gradients, and L_p step geometry.

Every gradient here is taken with respect to the input only (the base class froze the weights),
and every pass is counted in the attack's Cost in image-passes: a forward pass over a batch of n
images adds n, so an attack that stops working on finished samples is charged less.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from advlab.attacks.base import Cost, ThreatModel
from advlab.errors import AdvlabError

LOSSES = ("ce", "cw")


def check_loss(name: str) -> str:
    if name not in LOSSES:
        raise AdvlabError(f"unknown attack loss {name!r}; choose one of {', '.join(LOSSES)}")
    return name


def check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise AdvlabError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_eps(eps: float, norm: str) -> float:
    """eps validated for the norm (ThreatModel's check)."""
    return ThreatModel(norm, eps).eps


def margin(logits: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """z_cls - max_{j != cls} z_j per sample (Carlini & Wagner 2017, the f_6 objective before clamping)."""
    own = logits.gather(1, cls[:, None]).squeeze(1)
    others = logits.scatter(1, cls[:, None], float("-inf")).amax(1)
    return own - others


def attack_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, loss: str) -> torch.Tensor:
    """Per-sample objective the attacker maximizes.

    Untargeted: cross-entropy of the true class, or the C&W margin max_{j!=y} z_j - z_y.
    Targeted: minus the cross-entropy of the target, or the margin z_t - max_{j!=t} z_j.
    """
    if target is None:
        if loss == "ce":
            return F.cross_entropy(logits, y, reduction="none")
        return -margin(logits, y)
    if loss == "ce":
        return -F.cross_entropy(logits, target, reduction="none")
    return margin(logits, target)


def is_adversarial(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    pred = logits.argmax(1)
    return pred == target if target is not None else pred != y


def loss_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, loss: str,
                  cost: Cost) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward and one backward pass: (gradient of the summed objective w.r.t. x, logits, objective)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        logits = model(x)
        objective = attack_loss(logits, y, target, loss)
        (grad,) = torch.autograd.grad(objective, x, grad_outputs=torch.ones_like(objective))
    cost.forward += x.shape[0]
    cost.backward += x.shape[0]
    return grad, logits.detach(), objective.detach()


@torch.no_grad()
def ranked_wrong_classes(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cost: Cost
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean logits, the other classes ranked most likely first): the order in which APGD-T and
    FAB-T try their targets (Croce & Hein 2020, section 4)."""
    clean = model(x)
    cost.forward += len(x)
    return clean, wrong_classes_by(clean, y)


def wrong_classes_by(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per sample, the classes other than y, ordered by the logits, highest first (y itself last)."""
    return logits.scatter(1, y[:, None], float("-inf")).argsort(1, descending=True)


def batch_view(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample vector to broadcast against an NCHW batch."""
    return v.view(-1, *[1] * (like.dim() - 1))


def l2_normalize(g: torch.Tensor) -> torch.Tensor:
    """g / ||g||_2 per sample (zero stays zero)."""
    norms = g.flatten(1).norm(dim=1).clamp_min(1e-12)
    return g / batch_view(norms, g)


def steepest_ascent(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """The unit-norm direction of steepest ascent under the norm: sign(g) for Linf, g/||g|| for L2."""
    return grad.sign() if norm == "linf" else l2_normalize(grad)


# For code that holds a bare (eps, norm) pair rather than a ThreatModel: the same arithmetic, there.
def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """ThreatModel(norm, eps).project(x_adv, x)."""
    return ThreatModel(norm, eps).project(x_adv, x)


def random_start(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """ThreatModel(norm, eps).random_start(x, generator)."""
    return ThreatModel(norm, eps).random_start(x, generator)


def enforce_bound(adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """ThreatModel(norm, eps).enforce(adv, x)."""
    return ThreatModel(norm, eps).enforce(adv, x)


def search_constant(initial_const: float, steps: int, n: int, device: torch.device,
                    stage: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Per-sample binary search over the trade-off constant c of a penalty attack (Szegedy et al.
    2014, sec. 4.1; Carlini & Wagner 2017, sec. V): stage(c) minimizes at each sample's c and returns
    which samples succeeded. A success lowers c toward the largest failure (less distortion may
    still succeed); a failure raises it, x10 until some success bounds it."""
    const = torch.full((n,), initial_const, device=device)
    lower = torch.zeros(n, device=device)
    upper = torch.full((n,), math.inf, device=device)
    for _ in range(steps):
        ok = stage(const)
        upper = torch.where(ok, torch.minimum(upper, const), upper)
        lower = torch.where(ok, lower, torch.maximum(lower, const))
        const = torch.where(torch.isfinite(upper), (lower + upper) / 2, const * 10)
