"""What every attack shares: the threat model, the result, and the call protocol.

The threat model (:class:`ThreatModel`: norm, eps and the pixel box) is the one place that
validates a bound, projects onto it, draws a random start inside it and enforces it on the result;
every bounded attack and the adversarial-training losses hold one.

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
import hashlib
import struct
import warnings
from dataclasses import dataclass, field, fields

import torch
from torch import nn

from advlab.errors import AdvlabError, check_images, check_labels, check_range
from advlab.runtime import eval_mode, frozen_parameters, full_precision

NORMS = ("linf", "l2")


def check_norm(norm: str) -> str:
    """The one check of a norm's name (attacks without an eps, such as DeepFool and FAB, use it alone)."""
    if norm not in NORMS:
        raise AdvlabError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")
    return norm


def _per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *[1] * (like.dim() - 1))


@dataclass(frozen=True)
class ThreatModel:
    """The perturbation set: ||x_adv - x||_norm <= eps, with x_adv inside the pixel box [lo, hi]
    (advlab's one pixel space: [0, 1]).

    It validates itself when built (one-line AdvlabError), and it is what every bounded attack and
    adversarial-training loss calls to project (``project``, or ``bounds`` + ``clip`` in hot Linf
    loops), to draw a random start (``random_start``, ``random_delta``) and to guarantee the returned
    bound despite float rounding (``enforce``).
    """

    norm: str = "linf"
    eps: float = 0.3
    box: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        check_norm(self.norm)
        lo, hi = (check_range(v, "box bound", -1e6, 1e6) for v in self.box)
        if not lo < hi:
            raise AdvlabError(f"the pixel box must have lo < hi, got {self.box}")
        bound = hi - lo if self.norm == "linf" else 1e6
        object.__setattr__(self, "eps", check_range(self.eps, f"eps ({self.norm})", 0.0, bound))
        object.__setattr__(self, "box", (lo, hi))

    def bounds(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Linf only: per-pixel lower and upper bounds of the ball intersected with the box (both boxes,
        so clipping to them is the exact projection); compute once, clip every step."""
        if self.norm != "linf":
            raise AdvlabError("per-pixel bounds exist for the linf threat model only")
        lo, hi = self.box
        return (x - self.eps).clamp_(min=lo), (x + self.eps).clamp_(max=hi)

    @staticmethod
    def clip(x_adv: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        """x_adv clipped to precomputed ``bounds``, in place (one pass each way, no new tensor)."""
        return torch.maximum(torch.minimum(x_adv, hi, out=x_adv), lo, out=x_adv)

    def project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Onto the eps-ball around x intersected with the box (a new tensor).

        Linf: both sets are boxes and clamping to both is the exact projection. L2: scale into the
        ball, then clip to the box; the clip only shrinks each coordinate's change, so the bound holds.
        """
        lo, hi = self.box
        if self.norm == "linf":
            return torch.min(torch.max(x_adv, x - self.eps), x + self.eps).clamp_(lo, hi)
        delta = x_adv - x
        factor = (self.eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp(max=1.0)
        return (x + delta * _per_sample(factor, x)).clamp_(lo, hi)

    def random_delta(self, x: torch.Tensor, generator: torch.Generator | None = None,
                     scale: float = 1.0) -> torch.Tensor:
        """A random point of the ball of radius scale * eps around 0, not clipped to the box: uniform in
        the Linf ball; in the L2 ball, uniform direction and uniform radius. (scale > 1: the wider
        starts of N-FGSM.)"""
        radius = self.eps * scale
        if self.norm == "linf":
            return (torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1) * radius
        gauss = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        direction = gauss / _per_sample(gauss.flatten(1).norm(dim=1).clamp_min(1e-12), gauss)
        radii = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype) * radius
        return direction * _per_sample(radii, x)

    def random_start(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A random point of the ball around x, projected into the box (x itself when eps is 0)."""
        if self.eps == 0:
            return x.clone()
        return self.project(x + self.random_delta(x, generator), x)

    def keyed_random_start(self, x: torch.Tensor, seed: int, salt: int = 0) -> torch.Tensor:
        """A random start like ``random_start``, each sample's drawn from a generator seeded by its own
        pixels, seed and salt: a sample gets the same start whichever batch it is in and whichever
        samples were dropped before (the ensemble attacks only the survivors of earlier attacks, and a
        member run alone must start each sample where the ensemble does). Different salts give
        independent starts (APGD-T: one per target class)."""
        if self.eps == 0:
            return x.clone()
        pixels = x.detach().to("cpu", torch.float32).contiguous()
        delta = torch.empty(x.shape, dtype=x.dtype)
        for i in range(len(x)):
            key = hashlib.blake2b(pixels[i].numpy().tobytes(), digest_size=8,
                                  salt=struct.pack("<qq", int(seed), int(salt))).digest()
            generator = torch.Generator().manual_seed(int.from_bytes(key, "little") >> 1)
            delta[i] = self.random_delta(pixels[i:i + 1].to(x.dtype), generator)[0]
        return self.project(x + delta.to(x.device), x)

    def enforce(self, adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The final guard: the returned perturbation respects its bound exactly, despite float rounding.

        Linf: project again. L2: if rounding left ||delta|| a hair above eps, shrink it by that factor
        (and a 1e-7 margin); pixels move toward x, so they stay inside the box.
        """
        if self.norm == "linf":
            return self.project(adv, x)
        delta = adv - x
        norms = delta.flatten(1).norm(dim=1)
        factor = torch.where(norms > self.eps, self.eps * (1 - 1e-7) / norms.clamp_min(1e-12), torch.ones_like(norms))
        return (x + delta * _per_sample(factor, x)).clamp_(*self.box)


@dataclass
class Cost:
    """Work an attack did: forward and backward passes (per image) and oracle queries.

    Costs add: ``a + b``, ``total += cost``, ``sum(costs, Cost())``.
    """

    forward: int = 0
    backward: int = 0
    queries: int = 0

    def __add__(self, other: Cost) -> Cost:
        if not isinstance(other, Cost):
            return NotImplemented
        return Cost(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def __radd__(self, other) -> Cost:
        if other == 0:  # sum(costs) starts from 0
            return Cost(self.forward, self.backward, self.queries)
        return NotImplemented

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

    Channels-last weights make every convolution's forward and input-gradient pass cheaper on CPUs
    (oneDNN's native layout; docs/benchmarks.md measures it) with the same results up to float
    rounding; converting a small model's weights is cheap against the many passes of an attack.
    """
    kernels = [p for p in model.parameters() if p.dim() == 4]
    contiguous = [p.is_contiguous() and not p.is_contiguous(memory_format=torch.channels_last) for p in kernels]
    with eval_mode(model), frozen_parameters(model):
        if any(contiguous):
            model.to(memory_format=torch.channels_last)
        try:
            yield model
        finally:
            if any(contiguous):
                model.to(memory_format=torch.contiguous_format)


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
                 clean_logits: torch.Tensor | None = None, rank_logits: torch.Tensor | None = None) -> AttackResult:
        """Attack the batch x (labels y; target classes for a targeted attack).

        start: a point per sample to start from instead of the attack's own start (attacks with
        ``accepts_start``; e.g. the adversarial examples found at a smaller eps, which lie in the larger
        ball); it is projected onto this attack's ball and the box first. clean_logits: the model's
        logits on x when the caller already has them (saves one forward pass over the batch).
        rank_logits: for attacks that try several target classes in turn (``ranks_targets``), the logits
        whose order ranks the targets, most likely wrong class first (default: the clean logits; the
        ensemble passes the logits where APGD-CE ended).
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
        for name, logits in (("clean_logits", clean_logits), ("rank_logits", rank_logits)):
            if logits is not None and (logits.dim() != 2 or logits.shape[0] != x.shape[0]):
                raise AdvlabError(f"{name} has shape {tuple(logits.shape)}; it must be one row of logits per image, "
                                  f"{x.shape[0]} rows")
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
            if rank_logits is not None and rank_logits.shape[1] != num_classes:
                raise AdvlabError(f"rank_logits has {rank_logits.shape[1]} classes; the model has {num_classes}")
            ranking = None
            if self.ranks_targets:
                ranking = clean_logits if rank_logits is None else rank_logits.to(x.device).float()
            adv = self._perturb_unfinished(model, x, y, target, clean_logits.argmax(1), cost, start, ranking).detach()
            # judged in float32 even when the attack's own passes ran under bf16 autocast
            with torch.no_grad(), full_precision(x.device):
                adv_pred = model(adv).argmax(1)
        success = adv_pred == target if target is not None else adv_pred != y
        result = AttackResult(adv, success, perturbation_norms(adv, x), cost, clean_logits.argmax(1), adv_pred,
                              y, target)
        spread_extra(result, self.__dict__.pop("_extra", None) or {})
        return result

    #: Whether perturb takes ``start`` (a point per sample to begin from).
    accepts_start = False
    #: Whether perturb takes ``rank_logits`` (the order in which to try target classes).
    ranks_targets = False

    def _perturb_unfinished(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                            clean_pred: torch.Tensor, cost: Cost, start: torch.Tensor | None = None,
                            rank_logits: torch.Tensor | None = None) -> torch.Tensor:
        """Samples already misclassified (untargeted) or already in the target class are returned
        unchanged and never attacked: their work would be wasted and their norm is 0."""
        def perturb(rows: torch.Tensor | None) -> torch.Tensor:  # the attack on some rows (None: all)
            def pick(t):
                return t if t is None or rows is None else t[rows]
            extra = {} if start is None else {"start": pick(start)}  # only attacks that accept one get it
            if rank_logits is not None:
                extra["rank_logits"] = pick(rank_logits)
            return self.perturb(model, pick(x), pick(y), pick(target), cost, **extra)

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
