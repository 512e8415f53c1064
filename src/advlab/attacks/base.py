"""What every attack shares: the threat model, the result, and the call protocol.

An attack is configured once and called on a batch: ``PGD(eps=0.3)(model, x, y) -> AttackResult``.
The base class handles, once for all attacks, the pitfalls users of peer libraries hit most:
inputs are checked (NCHW, float, [0, 1], no NaN); the model is put in eval mode and its mode
restored; parameter gradients are switched off (input gradients only: weight gradients are wasted
work); a model ending in softmax is detected and the user warned; success is measured by a fresh
forward pass on the returned images (in float32, also when the attack ran under autocast), never
taken from the attack's own claim; samples already misclassified (or already in the target class)
are returned unchanged and not attacked.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from advlab.errors import AdvlabError, check_images, check_labels, check_range
from advlab.runtime import full_precision

NORMS = ("linf", "l2")


@dataclass(frozen=True)
class ThreatModel:
    """The perturbation set: ||x_adv - x||_norm <= eps, with x_adv in the [0, 1] box."""

    norm: str = "linf"
    eps: float = 0.3

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise AdvlabError(f"unknown norm {self.norm!r}; choose one of {', '.join(NORMS)}")
        bound = 1.0 if self.norm == "linf" else 1e6
        check_range(self.eps, f"eps ({self.norm})", 0.0, bound)

    def project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Project onto the eps-ball around x intersected with the box [0, 1]."""
        delta = x_adv - x
        if self.norm == "linf":
            delta = delta.clamp(-self.eps, self.eps)
        else:
            norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
            delta = delta * (self.eps / norms).clamp(max=1.0).view(-1, *[1] * (x.dim() - 1))
        return (x + delta).clamp(0.0, 1.0)


@dataclass
class Cost:
    """Work an attack did: forward and backward passes (per image) and oracle queries."""

    forward: int = 0
    backward: int = 0
    queries: int = 0

    def to_dict(self) -> dict:
        return {"forward": self.forward, "backward": self.backward, "queries": self.queries}


def perturbation_norms(adv: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample L0 (pixels changed by more than 1e-6... counted over all values), L2 and Linf."""
    delta = (adv - x).flatten(1)
    return {"l0": (delta.abs() > 1e-6).sum(1).float(), "l2": delta.norm(dim=1), "linf": delta.abs().amax(1)}


@dataclass
class AttackResult:
    """An attacked batch and what it achieved, per sample."""

    adv: torch.Tensor
    success: torch.Tensor  # bool: adversarial by the attack's goal (misclassified, or the target hit)
    norms: dict[str, torch.Tensor]
    cost: Cost
    clean_pred: torch.Tensor
    adv_pred: torch.Tensor
    labels: torch.Tensor
    target: torch.Tensor | None = None
    extra: dict = field(default_factory=dict)

    @property
    def clean_correct(self) -> torch.Tensor:
        return self.clean_pred == self.labels

    @property
    def success_rate(self) -> float:
        return self.success.float().mean().item()

    @property
    def robust_accuracy(self) -> float:
        """Share of samples still classified correctly after the attack."""
        return (self.adv_pred == self.labels).float().mean().item()

    def summary(self) -> dict:
        """What the batch (or a whole data set, see advlab.evaluation.attack_dataset) achieved: rates,
        median norms of the successes (of all, and of those on correctly classified samples), cost."""
        ok, clean = self.success, self.clean_correct
        n = len(self.labels)

        def medians(mask: torch.Tensor) -> dict:
            return {k: (v[mask].median().item() if mask.any() else float("nan")) for k, v in self.norms.items()}

        return {"n": n, "success_rate": self.success_rate, "robust_accuracy": self.robust_accuracy,
                "clean_accuracy": clean.float().mean().item(),
                "success_rate_on_correct": (ok & clean).float().sum().item() / max(int(clean.sum()), 1),
                "median_norms_of_successes": medians(ok), "median_norms_of_successes_on_correct": medians(ok & clean),
                "targeted": self.target is not None, "cost": self.cost.to_dict(),
                "gradient_passes_per_image": self.cost.backward / max(n, 1)}


@contextlib.contextmanager
def attack_mode(model: nn.Module):
    """Eval mode, frozen parameters and channels-last convolutions for the duration of an attack;
    all three restored after.

    Channels-last weights make every convolution's forward and input-gradient pass about 15% cheaper
    on CPUs (oneDNN's native layout) with the same results up to float rounding; converting a small
    model's weights costs microseconds, against the many passes of an attack.
    """
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    kernels = [p for p in model.parameters() if p.dim() == 4]
    contiguous = [p.is_contiguous() and not p.is_contiguous(memory_format=torch.channels_last) for p in kernels]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if any(contiguous):
        model.to(memory_format=torch.channels_last)
    try:
        yield model
    finally:
        if any(contiguous):
            model.to(memory_format=torch.contiguous_format)
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        model.train(was_training)


def spread_extra(result: AttackResult, extra: dict) -> None:
    """Per-sample figures an attack recorded for the rows it attacked (``self._extra`` in perturb, e.g.
    the step each sample broke at), spread over the whole batch: samples the base class skipped
    (already misclassified, or already in the target class) broke at step 0 at no cost."""
    if not extra:
        return
    n = len(result.labels)
    finished = result.clean_pred == result.target if result.target is not None else result.clean_pred != result.labels
    todo = (~finished).nonzero().squeeze(1).cpu()
    for key, values in extra.items():
        if len(values) == n:
            result.extra[key] = values
            continue
        full = torch.zeros(n, dtype=values.dtype)
        full[todo] = values
        result.extra[key] = full


def warn_if_softmax(logits: torch.Tensor) -> None:
    """Attacks need logits; rows that are all non-negative and sum to one betray a softmax output."""
    sums = logits.sum(1)
    if logits.min() >= 0 and torch.allclose(sums, torch.ones_like(sums), atol=1e-4):
        warnings.warn("the model seems to output probabilities (softmax); attacks expect logits, and softmax "
                      "outputs saturate gradients: remove the final softmax", stacklevel=3)


class Attack:
    """Base: subclasses implement ``perturb(model, x, y, target, cost) -> adv``.

    y are the true labels; target (targeted attacks) the classes to reach. Success is judged here.
    """

    name = "attack"

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 target: torch.Tensor | int | None = None, start: torch.Tensor | None = None,
                 clean_logits: torch.Tensor | None = None) -> AttackResult:
        """Attack the batch x (labels y; target classes for a targeted attack).

        start: a point per sample to start from instead of the attack's own start (attacks with
        ``accepts_start``; e.g. the adversarial examples found at a smaller eps, which lie in the larger
        ball); it is projected onto this attack's ball and the box first. clean_logits: the model's
        logits on x when the caller already has them (saves one forward pass over the batch).
        """
        check_images(x)
        check_labels(y, x.shape[0])
        y = y.to(x.device)
        if target is not None:
            if isinstance(target, int):
                target = torch.full_like(y, target)
            check_labels(target, x.shape[0], name="target classes")
            target = target.to(x.device)
        if start is not None:
            if not self.accepts_start:
                raise AdvlabError(f"{type(self).__name__} does not take a start point")
            if start.shape != x.shape:
                raise AdvlabError(f"start has shape {tuple(start.shape)}; it must match the images, {tuple(x.shape)}")
            start = start.to(x.device, x.dtype)
        if clean_logits is not None and clean_logits.shape[0] != x.shape[0]:
            raise AdvlabError(f"clean_logits has {clean_logits.shape[0]} rows for {x.shape[0]} images")
        with attack_mode(model):
            cost = Cost()
            if clean_logits is None:
                with torch.no_grad(), full_precision(x.device):
                    clean_logits = model(x)
            clean_logits = clean_logits.to(x.device).float()
            warn_if_softmax(clean_logits)
            num_classes = clean_logits.shape[1]
            check_labels(y, x.shape[0], num_classes)
            if target is not None:
                check_labels(target, x.shape[0], num_classes, name="target classes")
            adv = self._perturb_unfinished(model, x, y, target, clean_logits.argmax(1), cost, start).detach()
            # judged in float32 even when the attack's own passes ran under bf16 autocast
            with torch.no_grad(), full_precision(x.device):
                adv_pred = model(adv).argmax(1)
        success = adv_pred == target if target is not None else adv_pred != y
        result = AttackResult(adv, success, perturbation_norms(adv, x), cost, clean_logits.argmax(1), adv_pred,
                              y, target)
        spread_extra(result, self.__dict__.pop("_extra", None) or {})
        return result

    #: Samples already misclassified (untargeted) or already in the target class are returned
    #: unchanged and never attacked: their work would be wasted and their norm is 0.
    skip_finished = True

    #: Whether perturb takes ``start`` (a point per sample to begin from).
    accepts_start = False

    def _perturb_unfinished(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                            clean_pred: torch.Tensor, cost: Cost, start: torch.Tensor | None = None) -> torch.Tensor:
        def perturb(rows: torch.Tensor | None) -> torch.Tensor:  # the attack on some rows (None: all)
            def pick(t):
                return t if t is None or rows is None else t[rows]
            extra = {} if start is None else {"start": pick(start)}  # only attacks that accept one get it
            return self.perturb(model, pick(x), pick(y), pick(target), cost, **extra)

        if not self.skip_finished:
            return perturb(None)
        finished = clean_pred == target if target is not None else clean_pred != y
        if not finished.any():
            return perturb(None)
        adv = x.clone()
        todo = (~finished).nonzero().squeeze(1)
        if len(todo):
            adv[todo] = perturb(todo)
        return adv

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                cost: Cost) -> torch.Tensor:
        raise NotImplementedError
