"""Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks", ICML, Algorithm 1), with the cross-entropy, the DLR loss (eq. 6) and
the targeted DLR loss (eq. 7), under Linf and L2.

APGD is PGD with momentum 0.75 whose step size starts at 2 eps and is halved at the checkpoints
w_j = ceil(p_j N) of the paper (p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06))
when either condition of sec. 3.2 holds: (1) fewer than rho = 0.75 of the steps since the last
checkpoint increased the loss; (2) the step was not halved at the last checkpoint and the best loss has
not improved since. Each halving restarts the iteration from the point of highest loss found so far.

What differs from the authors' code, to spend fewer gradients at the same strength:
- a sample leaves the batch the moment its iterate is misclassified (early_stop, on by default): its
  remaining iterations could not change the evaluation's verdict. The step at which it broke is kept.
- APGDTargeted ranks the target classes by the clean logits (most likely wrong class first, as the
  authors do), or by logits the caller passes (``rank_logits``; the ensemble passes those where APGD-CE
  ended), runs each next target only on the samples the previous targets left, and starts each target
  from its own random start (as the authors' code does), drawn per sample from its pixels and the seed.
- eot > 1 averages the gradient (and the loss) over that many forward passes of a randomized model
  (expectation over transformation, Athalye et al. 2018; AutoAttack's "rand" version uses 20). Then one
  misclassified average is a noisy verdict: a sample leaves only after `confirm` steps in a row met the goal,
  and the point returned is the latest iterate that met it (the authors' code keeps the latest too).
- with eot = 1 (a deterministic model) a sample at a fixed point of the iteration leaves the batch: its
  gradient exactly zero (a saturated softmax), no momentum and no better point to restart from, so every
  remaining iteration would repeat the same point. Its verdict is the full run's, at one gradient call.

Every gradient call (one forward and one backward pass of one image) is counted in the result's cost;
``result.extra`` has, per sample, the step at which it broke (-1: never), the gradient calls it used and
whether it was still climbing at the end (``rising``: at the last checkpoint neither halving condition
held, so APGD itself did not judge it converged).
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import nn

from advlab.attacks.base import Attack, ThreatModel
from advlab.attacks.common import batch_view, check_positive_int, ranked_wrong_classes, wrong_classes_by
from advlab.errors import AdvlabError, check_range
from advlab.runtime import eval_mode

APGD_LOSSES = ("ce", "dlr")


def checkpoint_fractions(limit: float = 1.0) -> list[Fraction]:
    """p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06) (sec. 3.2), up to limit.

    Exact fractions, so that ceil(p_j N) is not pushed up by float rounding (0.22 + 0.19 is 0.41, not
    0.41000000000000003)."""
    p = [Fraction(0), Fraction(22, 100)]
    while p[-1] <= limit:
        p.append(p[-1] + max(p[-1] - p[-2] - Fraction(3, 100), Fraction(6, 100)))
    return [q for q in p if q <= limit]


def step_checkpoints(steps: int) -> list[int]:
    """The iterations w_j = ceil(p_j * steps) at which the step size may be halved (w_0 = 0 included)."""
    out = []
    for p in checkpoint_fractions():
        w = math.ceil(p * steps)
        if not out or w > out[-1]:
            out.append(w)
    return out


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference of logits ratio (eq. 6): -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3), pi the logits
    sorted in decreasing order. Invariant to shifting and rescaling the logits; needs 3 classes."""
    if logits.shape[1] < 3:
        raise AdvlabError("the DLR loss needs at least 3 classes")
    top = logits.sort(dim=1, descending=True).values
    own = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return -(own - other) / (top[:, 0] - top[:, 2] + 1e-12)


def targeted_dlr_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR (eq. 7): -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2); needs 4 classes."""
    if logits.shape[1] < 4:
        raise AdvlabError("the targeted DLR loss needs at least 4 classes")
    top = logits.sort(dim=1, descending=True).values
    own = logits.gather(1, y[:, None]).squeeze(1)
    aim = logits.gather(1, target[:, None]).squeeze(1)
    return -(own - aim) / (top[:, 0] - (top[:, 2] + top[:, 3]) / 2 + 1e-12)


def apgd_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, loss: str) -> torch.Tensor:
    """Per-sample objective APGD maximizes; with a target, the targeted DLR (or minus the target's CE)."""
    if target is None:
        return F.cross_entropy(logits, y, reduction="none") if loss == "ce" else dlr_loss(logits, y)
    if loss == "ce":
        return -F.cross_entropy(logits, target, reduction="none")
    return targeted_dlr_loss(logits, y, target)


def is_randomized(model: nn.Module, x: torch.Tensor, draws: int = 2) -> bool:
    """Whether the model's forward pass (in eval mode) is random: two passes on the same images differ."""
    with eval_mode(model), torch.no_grad():
        first = model(x)
        differs = any(not torch.equal(first, model(x)) for _ in range(draws - 1))
    return differs


class APGD(Attack):
    """APGD (Algorithm 1) on the cross-entropy ("ce") or the DLR loss ("dlr"), Linf or L2.

    steps: iterations N (gradient calls per run: N + 1, times eot); restarts: further runs from random
    starts on the samples not yet broken; rho: condition 1's threshold; momentum: alpha of the update.
    With a target (``attack(model, x, y, target=t)``) it maximizes the targeted DLR loss (or minus the
    target's cross-entropy) and succeeds when the target is reached.
    """

    name = "apgd"
    accepts_start = True

    def __init__(self, eps: float = 0.3, norm: str = "linf", steps: int = 100, loss: str = "ce", restarts: int = 1,
                 rho: float = 0.75, momentum: float = 0.75, eot: int = 1, early_stop: bool = True,
                 random_start: bool = True, seed: int | None = 0, confirm: int = 1) -> None:
        self.threat = ThreatModel(norm, eps)
        if loss not in APGD_LOSSES:
            raise AdvlabError(f"unknown APGD loss {loss!r}; choose one of {', '.join(APGD_LOSSES)}")
        self.norm, self.eps, self.loss = self.threat.norm, self.threat.eps, loss
        self.steps = check_positive_int(steps, "steps")
        self.restarts = check_positive_int(restarts, "restarts")
        self.rho = check_range(rho, "rho", 0.0, 1.0)
        self.momentum = check_range(momentum, "momentum", 0.0, 1.0)
        self.eot = check_positive_int(eot, "eot")
        self.early_stop = bool(early_stop)
        self.random_start = bool(random_start)
        self.seed = seed
        # eot > 1: the steps in a row whose averaged logits must meet the goal before a sample leaves early
        self.confirm = check_positive_int(confirm, "confirm")
        self.checkpoints = step_checkpoints(self.steps)


    # --- the pieces of one run ---
    def _gradient(self, model, x, y, target, cost):
        """Gradient of the per-sample loss (averaged over eot draws), the mean logits and the loss."""
        grad = torch.zeros_like(x)
        logits_sum, loss_sum = None, None
        with torch.enable_grad():
            for _ in range(self.eot):
                xr = x.detach().requires_grad_(True)
                logits = model(xr)
                objective = apgd_loss(logits, y, target, self.loss)
                (g,) = torch.autograd.grad(objective.sum(), xr)
                grad += g
                logits_sum = logits.detach() if logits_sum is None else logits_sum + logits.detach()
                loss_sum = objective.detach() if loss_sum is None else loss_sum + objective.detach()
        cost.forward += len(x) * self.eot
        cost.backward += len(x) * self.eot
        return grad / self.eot, logits_sum / self.eot, loss_sum / self.eot

    def _direction(self, grad: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            return grad.sign()
        return grad / batch_view(grad.flatten(1).norm(dim=1).clamp_min(1e-12), grad)

    def _start(self, x, start, generator):
        if start is not None:
            return self.threat.project(start, x)
        return self.threat.random_start(x, generator) if self.random_start else x.clone()

    def _goal(self, logits, y, target):
        pred = logits.argmax(1)
        return pred == target if target is not None else pred != y

    def run(self, model, x, y, target, cost, start=None, generator=None, aim=None):
        """One APGD run (Algorithm 1) on the batch. Returns (adv, success, step broken (-1: never), gradient
        calls per sample); adv is the first adversarial iterate, else the point of highest loss.

        target: the class to reach (None: any wrong class); aim: the class the loss pulls toward when it
        differs from the goal (APGD-T: the targeted DLR toward aim, success on any misclassification)."""
        n, eps = len(x), self.eps
        if aim is None:
            aim = target
        adv = self._start(x, start, generator)
        grads_used = torch.zeros(n, dtype=torch.long, device=x.device)
        broke_at = torch.full((n,), -1, dtype=torch.long, device=x.device)
        success = torch.zeros(n, dtype=torch.bool, device=x.device)
        grad, logits, loss = self._gradient(model, adv, y, aim, cost)
        grads_used += self.eot
        hit = self._goal(logits, y, target)
        success |= hit
        broke_at[hit] = 0
        best_adv = adv.clone()  # the adversarial point (successes) or the point of highest loss
        # eot > 1: steps in a row whose averaged logits met the goal (a randomized model: one noisy crossing is
        # not a verdict, so the sample stays until `confirm` steps in a row agree)
        streak = hit.long()
        # per-sample state; `active` indexes the samples still iterating
        x_cur, x_prev = adv.clone(), adv.clone()
        f_cur, f_max = loss.clone(), loss.clone()
        g_cur, g_max = grad, grad.clone()
        x_max = adv.clone()
        eta = torch.full((n,), 2.0 * eps, device=x.device)
        increases = torch.zeros(n, device=x.device)
        f_max_at_check = f_max.clone()
        halved_at_check = torch.zeros(n, dtype=torch.bool, device=x.device)  # w_0: the step was not halved
        if not self.early_stop:
            active = torch.arange(n, device=x.device)
        else:
            active = ((streak < self.confirm) if self.eot > 1 else ~success).nonzero().squeeze(1)
        checkpoints = set(self.checkpoints[1:])
        last_check = 0
        stuck = torch.zeros(n, dtype=torch.bool, device=x.device)
        for k in range(self.steps):
            if len(active) == 0:
                break
            a = active
            if self.eot == 1:  # a deterministic model: a sample at a fixed point of the iteration leaves
                a = self._drop_fixed_points(a, x_cur, x_prev, x_max, g_cur, stuck)
                active = a
                if len(a) == 0:
                    break
            xa = x[a]
            step = batch_view(eta[a], xa) * self._direction(g_cur[a])
            z = self.threat.project(x_cur[a] + step, xa)
            alpha = 1.0 if k == 0 else self.momentum  # no previous step to carry momentum from at k = 0
            new = self.threat.project(x_cur[a] + alpha * (z - x_cur[a]) + (1 - alpha) * (x_cur[a] - x_prev[a]), xa)
            x_prev[a] = x_cur[a]
            x_cur[a] = new
            g, lg, f = self._gradient(model, new, y[a], None if aim is None else aim[a], cost)
            grads_used[a] += self.eot
            increases[a] += (f > f_cur[a]).float()
            f_cur[a], g_cur[a] = f, g
            better = f > f_max[a]
            rows = a[better]
            f_max[rows], x_max[rows], g_max[rows] = f[better], new[better], g[better]
            met = self._goal(lg, y[a], None if target is None else target[a])
            hit = met & ~success[a]
            rows = a[hit]
            success[rows] = True
            broke_at[rows] = k + 1
            if self.eot > 1:
                # the latest iterate that met the goal, as the authors' code keeps: later iterates lie deeper in
                # the adversarial region than the first noisy crossing (which fresh draws often classify right)
                best_adv[a[met]] = new[met]
                streak[a] = torch.where(met, streak[a] + 1, 0)
            else:
                best_adv[rows] = new[hit]
            if k + 1 in checkpoints:
                span = k + 1 - last_check
                cond1 = increases[a] < self.rho * span
                cond2 = ~halved_at_check[a] & (f_max_at_check[a] >= f_max[a])
                halve = cond1 | cond2
                rows = a[halve]
                eta[rows] /= 2
                x_cur[rows], x_prev[rows], g_cur[rows], f_cur[rows] = x_max[rows], x_max[rows], g_max[rows], \
                    f_max[rows]
                halved_at_check[a] = halve
                f_max_at_check[a] = f_max[a]
                increases[a] = 0
                last_check = k + 1
            if self.early_stop:
                active = a[streak[a] < self.confirm] if self.eot > 1 else a[~success[a]]
        failed = ~success
        best_adv[failed] = x_max[failed]
        # not converged, by the algorithm's own test: at the last checkpoint neither halving condition held
        # (the loss still rose on at least rho of the steps since the one before, and its best improved), so
        # more iterations or another attack might still break the sample; the ensemble runs FAB-T there
        self._rising = failed & ~halved_at_check & ~stuck
        return self.threat.enforce(best_adv, x), success, broke_at, grads_used

    @staticmethod
    def _drop_fixed_points(a, x_cur, x_prev, x_max, g_cur, stuck):
        """The rows of `a` still able to move. A sample whose gradient is exactly zero (a saturated softmax:
        gradient masking), with no momentum (x_cur = x_prev) and sitting at its best point (x_cur = x_max,
        so no restart can move it either) would repeat the same step, the same point and the same gradient
        until the end of the run: it is marked stuck and leaves, with the verdict the full run would give."""
        flat = x_cur[a].flatten(1)
        frozen = ((g_cur[a].flatten(1) == 0).all(1) & (flat == x_prev[a].flatten(1)).all(1)
                  & (flat == x_max[a].flatten(1)).all(1))
        stuck[a[frozen]] = True
        return a[~frozen]

    def perturb(self, model, x, y, target, cost, start=None):
        generator = None if self.seed is None else torch.Generator(device=x.device).manual_seed(self.seed)
        adv, success, broke_at, used = self.run(model, x, y, target, cost, start, generator)
        rising = self._rising.clone()
        for _ in range(self.restarts - 1):
            todo = (~success).nonzero().squeeze(1)
            if len(todo) == 0:
                break
            t = None if target is None else target[todo]
            a2, s2, b2, u2 = self.run(model, x[todo], y[todo], t, cost, None, generator)
            rising[todo] = self._rising
            used[todo] += u2
            won = todo[s2]
            adv[won], success[won] = a2[s2], True
            broke_at[won] = b2[s2] + used[won] - u2[s2]  # steps counted across runs
        self._extra = {"broke_at_step": broke_at.cpu(), "gradient_calls": used.cpu(), "rising": rising.cpu()}
        return adv


class APGDTargeted(APGD):
    """APGD-T: APGD on the targeted DLR loss toward each of the `targets` most likely wrong classes by
    the clean logits (or by ``rank_logits``), in turn, each run only on the samples still correctly
    classified and, with fresh_starts, from a new random start (Croce & Hein 2020, sec. 4). Succeeds on
    misclassification, whichever class; with an explicit target it is the
    plain targeted APGD toward that class."""

    name = "apgd-t"

    def __init__(self, eps: float = 0.3, norm: str = "linf", steps: int = 100, targets: int = 9,
                 fresh_starts: bool = True, **kwargs) -> None:
        kwargs.setdefault("loss", "dlr")
        super().__init__(eps=eps, norm=norm, steps=steps, **kwargs)
        self.targets = check_positive_int(targets, "targets")
        self.fresh_starts = bool(fresh_starts)

    def _target_start(self, x, start, rank, generator):
        """Where the run toward the target of this rank begins: the given start (or the attack's own random
        one) for the first target; with fresh_starts, a new random start for each further target, as the
        authors' code draws one per target (keyed by the sample's pixels, so independent of the batch).
        A start shared by every target was weaker on an adversarially trained model (docs/evaluation.md)."""
        if rank == 0 or not self.fresh_starts or not self.random_start:
            return self._start(x, start, generator)
        return self.threat.keyed_random_start(x, 0 if self.seed is None else self.seed, salt=rank)

    ranks_targets = True

    def perturb(self, model, x, y, target, cost, start=None, rank_logits=None):
        if target is not None:
            return super().perturb(model, x, y, target, cost, start)
        generator = None if self.seed is None else torch.Generator(device=x.device).manual_seed(self.seed)
        n = len(x)
        if rank_logits is None:
            clean, ranked = ranked_wrong_classes(model, x, y, cost)
            success = clean.argmax(1) != y
        else:  # the base class passes only the samples still correctly classified
            ranked = wrong_classes_by(rank_logits, y)
            success = torch.zeros(n, dtype=torch.bool, device=x.device)
        adv = x.clone()
        broke_at = torch.where(success, 0, -1)
        target_rank = torch.where(success, 0, -1)
        used = torch.zeros(n, dtype=torch.long, device=x.device)
        rising = torch.zeros(n, dtype=torch.bool, device=x.device)  # not converged toward some target
        best_loss = torch.full((n,), -math.inf, device=x.device)
        for rank in range(min(self.targets, ranked.shape[1] - 1)):
            todo = (~success).nonzero().squeeze(1)
            if len(todo) == 0:
                break
            begin = self._target_start(x[todo], None if start is None else start[todo], rank, generator)
            # the goal of each run is misclassification: success is checked on y, the loss aims at t
            a2, s2, b2, u2 = self.run(model, x[todo], y[todo], None, cost, begin, generator, aim=ranked[todo, rank])
            prior = used[todo]
            used[todo] += u2
            rising[todo] |= self._rising
            won = todo[s2]
            adv[won], success[won] = a2[s2], True
            broke_at[won] = b2[s2] + prior[s2]
            target_rank[won] = rank + 1
            # a failed sample keeps the point of highest loss over the targets (comparable: same DLR scale)
            lost = ~s2
            with torch.no_grad():
                f = targeted_dlr_loss(model(a2[lost]), y[todo][lost], ranked[todo, rank][lost])
            cost.forward += int(lost.sum())
            rows = todo[lost]
            better = f > best_loss[rows]
            adv[rows[better]], best_loss[rows[better]] = a2[lost][better], f[better]
        rising &= ~success
        self._extra = {"broke_at_step": broke_at.cpu(), "gradient_calls": used.cpu(), "target_rank": target_rank.cpu(),
                       "rising": rising.cpu()}
        return adv
