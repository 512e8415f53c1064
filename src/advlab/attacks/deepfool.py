"""DeepFool (Moosavi-Dezfooli, Fawzi & Frossard 2016, "DeepFool: a simple and accurate method to
fool deep neural networks", Algorithm 2 (multi-class) and eq. 10-11 (general l_p)).

Each iteration linearizes the classifier around the current point and jumps to the nearest
linearized boundary: for candidate classes k, f_k = z_k - z_orig and w_k = grad f_k; the step goes
to the class l = argmin_k |f_k| / ||w_k||_q (q the dual norm) by (|f_l| / ||w_l||_q^q) * |w_l|^(q-1)
* sign(w_l), that is |f_l| / ||w_l||_2^2 * w_l under L2 and |f_l| / ||w_l||_1 * sign(w_l) under Linf.
The total perturbation is scaled by (1 + overshoot) to land past the boundary.

Cheap without changing what it computes: one forward pass feeds all candidate gradients (the
backward passes reuse its graph), and samples leave the batch as soon as they cross.

box_aware=k (an option, off by default) linearizes with the [0, 1] box from iteration k on: a
coordinate sitting at a wall and pushed further out is dropped from w before distances and steps are
computed, so a sample that the clipped plain step keeps pressing into the wall stops stalling.
bench/whitebox.py measures what it saves and what it costs in distance.
"""

from __future__ import annotations

import torch
from torch import nn

from advlab.attacks.base import Attack, Cost, check_norm
from advlab.attacks.common import batch_view, check_positive_int, is_adversarial, margin
from advlab.errors import AdvlabError, check_range


def _candidate_gradients(model: nn.Module, x: torch.Tensor, ref: torch.Tensor, cands: torch.Tensor,
                         cost: Cost) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each sample i and candidate j: f[i, j] = z_{cands[i,j]} - z_{ref[i]} and its input gradient.

    Returns (f of shape (n, m), gradients of shape (m, n, ...), logits). One forward, m backwards.
    """
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        logits = model(x)
        ref_logit = logits.gather(1, ref[:, None])
        f = logits.gather(1, cands) - ref_logit
        m = cands.shape[1]
        grads = [torch.autograd.grad(f[:, j].sum(), x, retain_graph=j < m - 1)[0] for j in range(m)]
    cost.forward += len(x)
    cost.backward += len(x) * m
    return f.detach(), torch.stack(grads), logits.detach()


def _target_gradient(model, x, target, cost):
    """f = z_t - max_{j != t} z_j (positive once the target wins) and its input gradient."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        logits = model(x)
        f = margin(logits, target)
        (grad,) = torch.autograd.grad(f.sum(), x)
    cost.forward += len(x)
    cost.backward += len(x)
    return f.detach(), grad, logits.detach()


class DeepFool(Attack):
    """DeepFool under L2 or Linf; untargeted over the top `candidates` classes, or targeted.

    Targeted (an extension; the paper is untargeted): the only boundary considered is the one between
    the target and the strongest other class, f = z_t - max_{j!=t} z_j.
    """

    name = "deepfool"

    def __init__(self, steps: int = 50, overshoot: float = 0.02, candidates: int = 10, norm: str = "l2",
                 box_aware: bool | int = False) -> None:
        self.norm = check_norm(norm)
        self.steps = check_positive_int(steps, "steps")
        self.overshoot = check_range(overshoot, "overshoot", 0.0, 10.0)
        self.candidates = check_positive_int(candidates, "candidates")
        if self.candidates < 2:
            raise AdvlabError("candidates must be at least 2 (the true class and one other)")
        if isinstance(box_aware, bool) or box_aware is None:
            self.box_aware: int | None = 0 if box_aware else None
        else:
            self.box_aware = int(check_range(box_aware, "box_aware (first iteration)", 0, 1e9))

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                cost: Cost) -> torch.Tensor:
        n = len(x)
        with torch.no_grad():
            clean_logits = model(x)
        cost.forward += n
        k = min(self.candidates, clean_logits.shape[1])
        # The k - 1 strongest classes other than the true one (the paper's candidate set).
        ranked = clean_logits.scatter(1, y[:, None], float("-inf")).argsort(1, descending=True)
        cands_all = ranked[:, : k - 1]

        total = torch.zeros_like(x)  # accumulated (un-overshot) perturbation r_tot
        adv = x.clone()
        active = torch.arange(n, device=x.device)
        dual_l1 = self.norm == "linf"
        for it in range(self.steps + 1):
            xa = adv[active]
            t = target[active] if target is not None else None
            if t is None:
                f, grads, logits = _candidate_gradients(model, xa, y[active], cands_all[active], cost)
            else:
                f1, g1, logits = _target_gradient(model, xa, t, cost)
                f, grads = f1[:, None], g1[None]  # one candidate: the target's own boundary
            hit = is_adversarial(logits, y[active], t)
            keep = ~hit
            active, f, grads = active[keep], f[keep], grads[:, keep]
            if len(active) == 0:
                break
            if self.box_aware is not None and it >= self.box_aware:
                # Linearize with the box: a coordinate at a wall cannot move further out, so drop it from
                # w before measuring distances and stepping (the clipped step then lands where planned).
                cur = adv[active][None]
                grads = grads * ~(((cur <= 0) & (grads < 0)) | ((cur >= 1) & (grads > 0)))
            flat = grads.flatten(2)  # (m, n, d)
            wnorm = (flat.abs().sum(2) if dual_l1 else flat.norm(dim=2)).clamp_min(1e-12).T  # (n, m)
            dist = f.abs() / wnorm
            best = dist.argmin(1)
            idx = torch.arange(len(active), device=x.device)
            w = grads[best, idx]  # (n, ...)
            fl = f[idx, best].abs() + 1e-4
            wl = wnorm[idx, best]
            step = (batch_view(fl / wl, w) * w.sign()) if dual_l1 else batch_view(fl / wl**2, w) * w
            total[active] += step
            adv[active] = (x[active] + (1 + self.overshoot) * total[active]).clamp(0.0, 1.0)
        return adv
