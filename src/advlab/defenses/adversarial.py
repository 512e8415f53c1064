"""Adversarial training recipes, each a ``batch_loss`` for :func:`advlab.training.fit`.

- Adversarial data augmentation (Goodfellow, Shlens & Szegedy 2015, sec. 6, eq. 6):
  J~(x, y) = alpha * J(x, y) + (1 - alpha) * J(x + eps * sign(grad_x J(x, y)), y), alpha = 0.5.
- PGD adversarial training (Madry et al. 2018, eq. 2.1): min over the weights of the expected
  max over the eps-ball, the inner max approximated by L-inf PGD from a uniform random start.
- Fast adversarial training (Wong, Rice & Kolter 2020, Algorithm 3): the same saddle point with a
  single FGSM step of size alpha = 1.25 * eps from a uniform random start.
- A carried start (Zheng et al. 2020, ATTA): each sample's single step starts where its step of the
  previous epoch ended, so the attack accumulates over epochs at fast training's cost (CarriedStart;
  its measured effect on mnist_cnn is in docs/defenses.md).
- N-FGSM (de Jorge et al. 2022, "Make some noise", Algorithm 1): one FGSM step of size eps from a
  start drawn uniformly from a ball of 2 * eps, and no projection back onto the eps-ball (the
  training perturbation may reach 3 * eps), which the paper shows keeps single-step training clear of
  catastrophic overfitting on CIFAR-10 and SVHN at no extra cost (on MNIST at eps 0.3 it fails here:
  docs/defenses.md).
- GradAlign (Andriushchenko & Flammarion 2020, sec. 4, eq. 6): FGSM training plus
  lambda * E_eta[1 - cos(grad_x l(x), grad_x l(x + eta))], eta uniform in the eps-ball, a penalty on
  the input gradient turning inside the ball, which is what single-step training's catastrophic
  overfitting is made of; costs a second-order backward (docs/defenses.md has its measured cost).
- eps_ramp (any of the above but augment): eps grows linearly from 0 over the first steps of training,
  the warm-up of interval-bound-propagation training (Gowal et al. 2019) that lets the net learn the
  digits before the full ball.

The inner attack takes input gradients only (the weights' gradients would be wasted work) and
runs on the unwrapped model, so DistributedDataParallel sees exactly one forward and one backward
per training step. Pixels stay in [0, 1]; the perturbation respects its bound exactly.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from advlab.attacks.base import Cost, ThreatModel
from advlab.attacks.common import loss_gradient
from advlab.attacks.pgd import PGD, ascend
from advlab.errors import AdvlabError, check_range
from advlab.runtime import DeviceGenerator
from advlab.training import distributed


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel (the attack must not trigger DDP's gradient sync)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def linf_pgd_examples(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
                      step_size: float, random_init: bool, generator: torch.Generator | None = None,
                      box_start: bool = True, init_scale: float = 1.0, project: bool = True,
                      start: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy ascent inside the L-inf eps-ball around x and the [0, 1] box.

    steps = 1, step_size = eps, random_init = False is FGSM; steps = 1 from a random start with
    step_size = 1.25 * eps is Wong et al.'s fast step; more steps is Madry et al.'s PGD.

    box_start = False leaves the random start unclipped to [0, 1] (the gradient is taken there; every
    iterate after a step is clipped), as in Wong et al.'s code. On MNIST, where most pixels sit at
    exactly 0 or 1, clipping the start puts half of each such pixel's starts on the box edge, and
    after the 1.25 eps step nearly every pixel lands on a corner of the ball: the random start no
    longer varies the example, which is plain FGSM training and overfits catastrophically
    (docs/defenses.md).

    init_scale: the random start is uniform in the ball of init_scale * eps (N-FGSM: 2). project =
    False keeps only the [0, 1] box after each step, not the eps-ball (N-FGSM). start: the first
    iterate itself, taken as given (random_init is then ignored; the carried start of fast training).

    The steps are the attacks' own PGD loop (advlab.attacks.pgd.ascend) under the threat model
    (Linf, eps); without projection the threat model is the box alone (an Linf ball of radius 1
    holds the whole [0, 1] box).
    """
    ball = ThreatModel("linf", eps)
    threat = ball if project else ThreatModel("linf", 1.0)
    adv = x.clone()
    if start is not None:
        adv = start
    elif random_init:
        adv = x + ball.random_delta(x, generator, scale=init_scale)
        if box_start:
            adv = threat.clip(adv, *threat.bounds(x))
    return ascend(model, x, y, None, threat, adv, steps, step_size, "ce", Cost()).detach()


class FGSMAugmentLoss:
    """Goodfellow et al.'s adversarial objective: alpha * CE(clean) + (1 - alpha) * CE(FGSM example).

    Clean and adversarial halves go through the model as one batch. The logits returned (and so the
    training accuracy the trainer reports) are those of the adversarial half.
    """

    def __init__(self, eps: float, alpha: float = 0.5) -> None:
        self.eps = check_range(eps, "eps", 0.0, 1.0, lo_open=True)
        self.alpha = check_range(alpha, "alpha", 0.0, 1.0)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        adv = linf_pgd_examples(unwrap(model), x, y, self.eps, 1, self.eps, random_init=False)
        logits = model(torch.cat([x, adv]))
        clean, adversarial = logits[: len(x)], logits[len(x):]
        loss = self.alpha * F.cross_entropy(clean, y) + (1 - self.alpha) * F.cross_entropy(adversarial, y)
        return loss, adversarial


class _RampedLoss:
    """What the single-step and PGD losses share: a seeded generator for their random points, and the
    linear eps warm-up (ramp_steps > 0 scales eps and the step by min(1, t / ramp_steps) at step t)."""

    def __init__(self, seed: int, ramp_steps: int) -> None:
        self.ramp_steps = int(ramp_steps)
        self.calls = 0
        self._generator = DeviceGenerator(seed)

    def _next_scale(self) -> float:
        self.calls += 1
        return min(1.0, self.calls / self.ramp_steps) if self.ramp_steps > 0 else 1.0

    def state_dict(self) -> dict:
        """What a resumed run needs to continue exactly (advlab.training.resume): the step count of the
        warm-up, the generator's state and the carried perturbations, if any."""
        carried = getattr(self, "carried", None)
        return {"calls": self.calls, "generator": self._generator.state_dict(),
                "carried": carried.state_dict() if carried is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.calls = int(state["calls"])
        self._generator.load_state_dict(state["generator"])
        carried = getattr(self, "carried", None)
        if carried is not None and state.get("carried") is not None:
            carried.load_state_dict(state["carried"])


class CarriedStart:
    """Each training sample's last perturbation, the start of its next single step (Zheng, Zhang, Gu,
    Lee & Prakash 2020, "Efficient adversarial training with transferable adversarial examples",
    CVPR: ATTA-1, one attack step per sample per epoch; without their re-alignment of perturbations
    under data augmentation, so training images must be unaugmented).

    Adversarial examples transfer between the models of neighbouring epochs, so starting each
    epoch's FGSM step where the sample's previous one ended accumulates the attack over epochs, at
    the cost of one input gradient per sample per epoch, as in fast training. A sample not seen yet
    starts uniformly in the ball, unclipped (Wong et al.'s start). Perturbations are kept in float16
    (94 MB for MNIST's 60,000 images); under torchrun the processes exchange their shares of each
    batch, so every process holds every sample's.
    """

    def __init__(self, size: int) -> None:
        if int(size) != size or size < 1:
            raise AdvlabError(f"a carried start needs the number of training images, got {size}")
        self.size = int(size)
        self.delta: torch.Tensor | None = None  # allocated at the first keep, when shape and device are known
        self.seen: torch.Tensor | None = None

    def state_dict(self) -> dict:
        return {"size": self.size, "delta": self.delta, "seen": self.seen}

    def load_state_dict(self, state: dict) -> None:
        if int(state["size"]) != self.size:
            raise AdvlabError(f"the saved carried perturbations are for {state['size']} images, not {self.size}")
        self.delta, self.seen = state["delta"], state["seen"]

    def _follow(self, device: torch.device) -> None:
        """Keep the perturbations on the batches' device (a restored state arrives on the CPU)."""
        if self.delta is not None and self.delta.device != device:
            self.delta, self.seen = self.delta.to(device), self.seen.to(device)

    def start(self, x: torch.Tensor, index: torch.Tensor, eps: float, generator: torch.Generator) -> torch.Tensor:
        ball = ThreatModel("linf", eps)
        start = x + ball.random_delta(x, generator)
        if self.delta is None:
            return start
        self._follow(x.device)
        index = index.to(self.delta.device)
        carried = ball.project(x + self.delta[index].to(x), x)  # eps may have grown (a warm-up)
        seen = self.seen[index].view(-1, *[1] * (x.dim() - 1)).to(x.device)
        return torch.where(seen, carried, start)

    def keep(self, index: torch.Tensor, delta: torch.Tensor) -> None:
        index, delta = distributed.all_gather_rows(index.to(delta.device), delta)
        self._follow(delta.device)
        if self.delta is None:
            self.delta = torch.zeros((self.size, *delta.shape[1:]), dtype=torch.float16, device=delta.device)
            self.seen = torch.zeros(self.size, dtype=torch.bool, device=delta.device)
        self.delta[index] = delta.to(torch.float16)
        self.seen[index] = True


class AdversarialTrainingLoss(_RampedLoss):
    """Cross-entropy on L-inf PGD examples from a uniform random start (Madry et al. 2018).

    With steps = 1 and step_size = 1.25 * eps this is fast adversarial training (Wong et al. 2020);
    with init_scale = 2, step_size = eps and project = False it is N-FGSM (de Jorge et al. 2022).
    The returned logits are those of the adversarial examples. box_start: see linf_pgd_examples
    (Madry et al. clip the random start to the box, Wong et al. do not). ramp_steps > 0 scales eps and
    the step size by min(1, t / ramp_steps) at training step t (a linear warm-up). carry_images = N
    (the training set's size) starts each sample where its previous epoch's perturbation ended
    (CarriedStart); the trainer then passes each batch's sample indices.
    """

    def __init__(self, eps: float, steps: int, step_size: float, seed: int = 0, box_start: bool = True,
                 init_scale: float = 1.0, project: bool = True, ramp_steps: int = 0,
                 carry_images: int | None = None) -> None:
        self.eps = check_range(eps, "eps", 0.0, 1.0, lo_open=True)
        if int(steps) != steps or steps < 1:
            raise AdvlabError(f"steps must be a positive integer, got {steps}")
        self.steps = int(steps)
        self.step_size = check_range(step_size, "step size", 0.0, 1.0, lo_open=True)
        self.box_start = box_start
        self.init_scale = check_range(init_scale, "noise scale", 0.0, 10.0)
        self.project = project
        self.carried = None if carry_images is None else CarriedStart(carry_images)
        self.takes_index = self.carried is not None  # read by the trainer
        super().__init__(seed, ramp_steps)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        scale = self._next_scale()
        eps, generator = self.eps * scale, self._generator.on(x.device)
        start = None
        if self.carried is not None:
            if index is None:
                raise AdvlabError("a carried start needs the batch's sample indices")
            start = self.carried.start(x, index, eps, generator)
        adv = linf_pgd_examples(unwrap(model), x, y, eps, self.steps, self.step_size * scale,
                                random_init=True, generator=generator, box_start=self.box_start,
                                init_scale=self.init_scale, project=self.project, start=start)
        if self.carried is not None:
            self.carried.keep(index, adv - x)
        logits = model(adv)
        return F.cross_entropy(logits, y), logits


def gradient_cosines(first: torch.Tensor, second: torch.Tensor, floor: float = 1e-10) -> torch.Tensor:
    """Per-sample cosine between two batches of input gradients, over the samples where both gradients
    have an L2 norm above `floor` (a confidently classified sample's cross-entropy gradient can
    underflow to a norm of 0 in float32 while a few entries stay nonzero; it carries no direction,
    and dividing by its norm would give NaN)."""
    a, b = first.flatten(1), second.flatten(1)
    norm_a, norm_b = a.norm(dim=1), b.norm(dim=1)
    keep = (norm_a > floor) & (norm_b > floor)
    return (a[keep] * b[keep]).sum(1) / (norm_a[keep] * norm_b[keep])


class GradAlignLoss(_RampedLoss):
    """FGSM training with Andriushchenko & Flammarion's gradient-alignment penalty (GradAlign, eq. 6).

    loss = CE(x + delta_FGSM) + weight * mean_i [1 - cos(g_i, g~_i)], where g is the input gradient
    at the FGSM step's starting point (x, or its random start) and g~ the one at x + eta, eta uniform
    in the eps-ball. g comes from the attack and is held fixed; g~ is taken with create_graph, so the
    penalty's weight gradient is a second-order one (as in the authors' code). Samples where either
    gradient vanishes carry no direction and are left out of the mean (gradient_cosines).

    The adversarial and the eta points go through the (possibly DDP-wrapped) model as one batch: one
    synchronized forward, one backward. step_size defaults to eps with a zero start, the paper's
    "FGSM + GradAlign"; random_start gives FGSM-RS + GradAlign. ramp_steps: as AdversarialTrainingLoss.
    """

    def __init__(self, eps: float, weight: float, step_size: float | None = None, random_start: bool = False,
                 seed: int = 0, ramp_steps: int = 0) -> None:
        self.eps = check_range(eps, "eps", 0.0, 1.0, lo_open=True)
        self.weight = check_range(weight, "--align-weight", 0.0, 1000.0)
        self.step_size = self.eps if step_size is None else check_range(step_size, "step size", 0.0, 1.0, lo_open=True)
        self.random_start = random_start
        super().__init__(seed, ramp_steps)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scale = self._next_scale()
        eps, generator = self.eps * scale, self._generator.on(x.device)
        ball = ThreatModel("linf", eps)
        start = x
        if self.random_start:
            start = x + ball.random_delta(x, generator)
        cost = Cost()
        # one FGSM step from start, as ascend would take it; its gradient is kept for the penalty
        start_grad, _, _ = loss_gradient(unwrap(model), start, y, None, "ce", cost)
        adv = ball.clip(start + self.step_size * scale * start_grad.sign(), *ball.bounds(x))
        eta = ball.random_delta(x, generator)
        near = (x + eta).requires_grad_(True)
        logits = model(torch.cat([adv, near]))
        adversarial, at_near = logits[: len(x)], logits[len(x):]
        loss = F.cross_entropy(adversarial, y)
        if self.weight == 0:
            return loss, adversarial
        (near_grad,) = torch.autograd.grad(F.cross_entropy(at_near, y, reduction="sum"), near, create_graph=True)
        cos = gradient_cosines(start_grad, near_grad)
        if len(cos):
            loss = loss + self.weight * (1 - cos).mean()
        return loss, adversarial


class OverfittingGuard:
    """Early stopping against catastrophic overfitting (Wong, Rice & Kolter 2020, sec. 5.3): after
    every epoch, PGD accuracy on a fixed batch of training images; once it falls more than `drop`
    below the best epoch's, the best epoch's weights are restored and training stops.

    Catastrophic overfitting is the sudden collapse of a single-step-trained model's PGD accuracy
    (to near 0%) while its FGSM accuracy climbs; docs/defenses.md records how often it struck
    mnist_cnn's fast-training runs. An ``epoch_end`` hook for :func:`advlab.training.fit`.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 10, drop: float = 0.2) -> None:
        self.x, self.y = x, y
        self.attack = PGD(eps=eps, steps=steps, seed=0)
        self.drop = check_range(drop, "drop", 0.0, 1.0, lo_open=True)
        self.best, self.best_epoch, self.best_state = -1.0, 0, None

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "best_state": self.best_state}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch = float(state["best"]), int(state["best_epoch"])
        self.best_state = state["best_state"]

    def __call__(self, model: nn.Module, epoch: int, record: dict) -> bool:
        device = next(model.parameters()).device
        accuracy = self.attack(model, self.x.to(device), self.y.to(device)).robust_accuracy
        record["pgd_check_accuracy"] = accuracy
        if accuracy >= self.best:
            self.best, self.best_epoch = accuracy, epoch
            self.best_state = copy.deepcopy(model.state_dict())
            return False
        if accuracy < self.best - self.drop:
            model.load_state_dict(self.best_state)
            record["stopped"] = (f"catastrophic overfitting: PGD accuracy on the check batch fell to {accuracy:.3f} "
                                 f"from {self.best:.3f} at epoch {self.best_epoch}; restored epoch {self.best_epoch}")
            return True
        return False


def augment_recipe(eps: float, alpha: float = 0.5) -> dict:
    """TrainConfig.recipe of adversarial data augmentation (part of the cache key and the metadata)."""
    return {"method": "augment", "eps": check_range(eps, "eps", 0.0, 1.0, lo_open=True),
            "alpha": check_range(alpha, "alpha", 0.0, 1.0)}


def with_overfitting_guard(recipe: dict, drop: float | None) -> dict:
    """Add the early-stopping check to a pgd or fast recipe (None: no check, the recipe unchanged)."""
    return recipe if drop is None else {**recipe, "stop_on_overfit": check_range(drop, "drop", 0.0, 1.0, lo_open=True)}


def overfitting_guard(recipe: dict, data, images: int = 512):
    """The epoch_end hook a recipe asks for (None without stop_on_overfit): PGD-10 at the recipe's eps
    on the first `images` training images."""
    if recipe.get("stop_on_overfit") is None:
        return None
    x, y = data.tensors(images)
    return OverfittingGuard(x, y, recipe["eps"], drop=recipe["stop_on_overfit"])


def with_eps_ramp(recipe: dict, epochs: float | None) -> dict:
    """Add a linear eps warm-up over the first `epochs` epochs to a pgd, fast or nfgsm recipe."""
    if not epochs:
        return recipe
    return {**recipe, "eps_ramp_epochs": check_range(epochs, "--eps-ramp", 0.0, 1000.0, lo_open=True)}


def pgd_recipe(eps: float, steps: int = 10, step_size: float | None = None) -> dict:
    """Madry et al.'s recipe; step_size defaults to 2.5 * eps / steps (enough to cross the ball)."""
    eps = check_range(eps, "eps", 0.0, 1.0, lo_open=True)
    if int(steps) != steps or steps < 1:
        raise AdvlabError(f"--steps must be a positive integer, got {steps}")
    step = 2.5 * eps / steps if step_size is None else check_range(step_size, "step size", 0.0, 1.0, lo_open=True)
    return {"method": "pgd", "eps": eps, "steps": int(steps), "step_size": step}


FAST_STARTS = ("random", "carry")


def fast_recipe(eps: float, step_size: float | None = None, start: str = "random") -> dict:
    """Wong et al.'s recipe; step_size defaults to 1.25 * eps (their alpha); the random start is not
    clipped to the box (see linf_pgd_examples). start = "carry": from the sample's previous epoch's
    perturbation (CarriedStart; recorded only then, so Wong et al.'s recipe keeps its cache key)."""
    eps = check_range(eps, "eps", 0.0, 1.0, lo_open=True)
    step = 1.25 * eps if step_size is None else check_range(step_size, "step size", 0.0, 1.0, lo_open=True)
    if start not in FAST_STARTS:
        raise AdvlabError(f"unknown start {start!r}; choose one of {', '.join(FAST_STARTS)}")
    recipe = {"method": "fast", "eps": eps, "step_size": step, "box_start": False}
    return recipe if start == "random" else {**recipe, "start": start}


def nfgsm_recipe(eps: float, step_size: float | None = None, noise: float = 2.0) -> dict:
    """de Jorge et al.'s N-FGSM: start uniform in the ball of noise * eps (default 2), one step of
    step_size (default eps), no projection onto the eps-ball; the start is not clipped to the box."""
    eps = check_range(eps, "eps", 0.0, 1.0, lo_open=True)
    step = eps if step_size is None else check_range(step_size, "step size", 0.0, 1.0, lo_open=True)
    return {"method": "nfgsm", "eps": eps, "step_size": step, "noise": check_range(noise, "--noise", 0.0, 10.0),
            "box_start": False}


def gradalign_recipe(eps: float, weight: float, step_size: float | None = None, random_start: bool = False) -> dict:
    """Andriushchenko & Flammarion's FGSM + GradAlign: step_size defaults to eps, from x itself
    (random_start: from a uniform start in the ball, FGSM-RS + GradAlign)."""
    eps = check_range(eps, "eps", 0.0, 1.0, lo_open=True)
    step = eps if step_size is None else check_range(step_size, "step size", 0.0, 1.0, lo_open=True)
    return {"method": "gradalign", "eps": eps, "step_size": step,
            "align_weight": check_range(weight, "--align-weight", 0.0, 1000.0), "random_start": bool(random_start)}


def adversarial_loss(recipe: dict, seed: int = 0, steps_per_epoch: int = 0, train_images: int = 0):
    """The batch loss a recipe (augment, pgd, fast, nfgsm or gradalign) trains with; steps_per_epoch turns the
    recipe's eps_ramp_epochs into training steps; train_images sizes a carried start's store."""
    method = recipe.get("method")
    ramp = round(recipe.get("eps_ramp_epochs", 0) * steps_per_epoch)
    if recipe.get("eps_ramp_epochs") and steps_per_epoch <= 0:
        raise AdvlabError("an eps ramp needs the number of training steps per epoch")
    if method == "augment":
        return FGSMAugmentLoss(recipe["eps"], recipe["alpha"])
    if method == "pgd":
        return AdversarialTrainingLoss(recipe["eps"], recipe["steps"], recipe["step_size"], seed, ramp_steps=ramp)
    if method == "fast":
        return AdversarialTrainingLoss(recipe["eps"], 1, recipe["step_size"], seed,
                                       box_start=recipe.get("box_start", True), ramp_steps=ramp,
                                       carry_images=train_images if recipe.get("start") == "carry" else None)
    if method == "nfgsm":
        return AdversarialTrainingLoss(recipe["eps"], 1, recipe["step_size"], seed, box_start=False,
                                       init_scale=recipe["noise"], project=False, ramp_steps=ramp)
    if method == "gradalign":
        return GradAlignLoss(recipe["eps"], recipe["align_weight"], recipe["step_size"], recipe["random_start"], seed,
                             ramp_steps=ramp)
    raise AdvlabError(f"not an adversarial training recipe: {recipe}")
