"""FAB, the fast adaptive boundary attack (Croce & Hein 2020b, "Minimally distorted adversarial
examples with a fast adaptive boundary attack", ICML, Algorithm 1), untargeted and targeted, Linf and L2.

Each iteration linearizes the classifier at the current point x_i and picks the closest linearized
decision boundary pi_s (untargeted: s = argmin_{l != c} |f_l - f_c| / ||grad(f_l - f_c)||_q, q the dual
norm; targeted: s = t). It projects both x_i and the original x onto pi_s intersected with the [0, 1]
box (eq. 4, the projection of sec. 3.1), and steps to a convex combination biased toward x (eq. 5):

    x_{i+1} = clip((1 - alpha)(x_i + eta d_i) + alpha (x + eta d_orig)),
    alpha = min(||d_i|| / (||d_i|| + ||d_orig||), alpha_max),

with overshoot eta = 1.05 and alpha_max = 0.1. Once x_{i+1} is adversarial it is recorded if it is the
closest so far, and the iterate moves back toward x: x_{i+1} = (1 - beta) x + beta x_{i+1}, beta = 0.9.

The projection onto {z : <w, z - p> = r} intersected with the box is computed exactly: the optimum is
d_i = sign_i min(lambda m_i, u_i) (u_i the room to the box wall in the direction of w_i; m_i = |w_i| for
L2, 1 for Linf), and <w, d(lambda)> is piecewise linear and increasing in lambda, so sorting the
breakpoints u_i / m_i and reading off the segment that reaches r solves it (our own derivation; the
paper's Proposition 3.1 states the same optimum).

Additions, both documented in docs/attacks.md: a final bisection along the segment from x to the
closest adversarial point found (forward passes only), which removes FAB's overshoot and returns the
exact minimal distance on a linear classifier; and, with eps set (the ensemble's use), a sample
leaves the batch as soon as an adversarial point within eps is found.
"""

from __future__ import annotations

import torch

from advlab.attacks.base import Attack, ThreatModel, check_norm
from advlab.attacks.common import batch_view, check_positive_int, ranked_wrong_classes
from advlab.errors import check_range


def project_hyperplane_box(p: torch.Tensor, w: torch.Tensor, r: torch.Tensor, norm: str) -> torch.Tensor:
    """The smallest delta (Linf or L2) with <w, delta> = r and p + delta in [0, 1], per row of the flat
    (n, d) tensors p and w; where the box cannot reach r, the delta that goes furthest toward it."""
    sign_r = torch.where(r < 0, -1.0, 1.0).to(p.dtype)
    g = w * sign_r[:, None]  # now <g, delta> = |r| >= 0
    need = r.abs()
    a = g.abs()
    room = torch.where(g > 0, 1.0 - p, p).clamp_min(0.0)  # how far each coordinate can move along sign(g)
    slope = a if norm == "l2" else torch.ones_like(a)
    with torch.no_grad():
        breaks = torch.where(slope > 0, room / slope.clamp_min(1e-30), torch.full_like(a, float("inf")))
        order = breaks.argsort(1)
        b = breaks.gather(1, order)
        done_c = (a * room).gather(1, order)  # contribution of a saturated coordinate
        rate = (a * slope).gather(1, order)  # d<g, delta>/d lambda of an unsaturated coordinate
        cum_c = done_c.cumsum(1)
        total_rate = rate.sum(1, keepdim=True)
        cum_rate = rate.cumsum(1)
        finite_b = torch.where(torch.isfinite(b), b, torch.zeros_like(b))
        reach = cum_c + finite_b * (total_rate - cum_rate)  # <g, delta> at each breakpoint
        reach = torch.where(torch.isfinite(b), reach, torch.full_like(reach, float("inf")))
        k = (reach < need[:, None]).sum(1)  # segment index: lambda lies in [b_{k-1}, b_k]
        d = p.shape[1]
        prev = (k - 1).clamp_min(0)
        c_before = torch.where(k > 0, cum_c.gather(1, prev[:, None]).squeeze(1), torch.zeros_like(need))
        rate_after = total_rate.squeeze(1) - torch.where(k > 0, cum_rate.gather(1, prev[:, None]).squeeze(1),
                                                         torch.zeros_like(need))
        lam = (need - c_before) / rate_after.clamp_min(1e-30)
        lam = torch.where(k >= d, torch.full_like(lam, float("inf")), lam)
    delta = torch.sign(g) * torch.minimum(lam[:, None] * slope, room)
    return delta * sign_r[:, None]


def lp_norm(v: torch.Tensor, norm: str) -> torch.Tensor:
    flat = v.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


class FAB(Attack):
    """FAB under Linf or L2: minimal-norm (eps=None) or bounded (eps: success means within eps).

    steps: iterations per restart; restarts: further runs from random points around x (radius half the
    best norm so far, or of eps); eta, beta, alpha_max: the paper's overshoot, backward step and bias
    bound; search_steps: bisection steps of the final line search (0: off). targets (untargeted
    attack only): with targets=k the attack becomes FAB-T, FAB toward each of the k most likely wrong
    classes by the clean logits in turn, on the samples still unbroken (Croce & Hein 2020, sec. 4);
    targets=None is the untargeted FAB, which needs the gradients of all classes at each step.
    """

    name = "fab"

    def __init__(self, norm: str = "linf", eps: float | None = None, steps: int = 100, restarts: int = 1,
                 targets: int | None = None, eta: float = 1.05, beta: float = 0.9, alpha_max: float = 0.1,
                 search_steps: int = 20, seed: int | None = 0) -> None:
        self.norm = check_norm(norm)
        self.threat = None if eps is None else ThreatModel(norm, eps)
        self.eps = None if eps is None else self.threat.eps
        self.steps = check_positive_int(steps, "steps")
        self.restarts = check_positive_int(restarts, "restarts")
        self.targets = None if targets is None else check_positive_int(targets, "targets")
        self.eta = check_range(eta, "eta", 1.0, 10.0)
        self.beta = check_range(beta, "beta", 0.0, 1.0)
        self.alpha_max = check_range(alpha_max, "alpha_max", 0.0, 1.0)
        self.search_steps = int(search_steps)
        self.seed = seed
        if self.targets is not None:
            self.name = "fab-t"

    # --- one linearization ---
    def _boundary(self, model, x, y, aim, cost):
        """(f_s - f_c, its gradient, logits) at x for the chosen boundary s of each sample."""
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            logits = model(xr)
            own = logits.gather(1, y[:, None]).squeeze(1)
            if aim is not None:
                f = logits.gather(1, aim[:, None]).squeeze(1) - own
                (g,) = torch.autograd.grad(f.sum(), xr)
                cost.forward += len(x)
                cost.backward += len(x)
                return f.detach(), g, logits.detach()
            k = logits.shape[1]
            diffs = logits - own[:, None]
            grads = torch.stack([torch.autograd.grad(diffs[:, j].sum(), xr, retain_graph=j < k - 1)[0]
                                 for j in range(k)], 1)  # (n, k, ...)
        cost.forward += len(x)
        cost.backward += len(x) * (k - 1)  # the true class's difference is identically zero
        diffs = diffs.detach()
        dual = grads.flatten(2).abs().sum(2) if self.norm == "linf" else grads.flatten(2).norm(dim=2)
        dist = diffs.abs() / (dual + 1e-12)
        dist.scatter_(1, y[:, None], float("inf"))
        s = dist.argmin(1)
        g = grads[torch.arange(len(x)), s]
        return diffs.gather(1, s[:, None]).squeeze(1), g, logits.detach()

    def _is_adv(self, logits, y, target):
        pred = logits.argmax(1)
        return pred == target if target is not None else pred != y

    def run(self, model, x, y, target, aim, cost, start=None):
        """One FAB run. Returns (closest adversarial point or x, its norm (inf: none), step found, gradient
        calls per sample)."""
        n, norm = len(x), self.norm
        flat = x.flatten(1)
        best = x.clone()
        best_norm = torch.full((n,), float("inf"), device=x.device)
        found_at = torch.full((n,), -1, dtype=torch.long, device=x.device)
        per_call = 1 if aim is not None else None
        used = torch.zeros(n, dtype=torch.long, device=x.device)
        cur = x.clone() if start is None else start.clone()
        active = torch.arange(n, device=x.device)
        for i in range(self.steps):
            if len(active) == 0:
                break
            a = active
            fa = None if aim is None else aim[a]
            f, g, logits = self._boundary(model, cur[a], y[a], fa, cost)
            used[a] += per_call or (logits.shape[1] - 1)
            p_cur, gflat = cur[a].flatten(1), g.flatten(1)
            d_cur = project_hyperplane_box(p_cur, gflat, -f, norm)
            r_orig = -(f + (gflat * (flat[a] - p_cur)).sum(1))
            d_orig = project_hyperplane_box(flat[a], gflat, r_orig, norm)
            n_cur, n_orig = lp_norm(d_cur, norm), lp_norm(d_orig, norm)
            alpha = (n_cur / (n_cur + n_orig).clamp_min(1e-12)).clamp(max=self.alpha_max)[:, None]
            new = ((1 - alpha) * (p_cur + self.eta * d_cur) + alpha * (flat[a] + self.eta * d_orig)).clamp(0.0, 1.0)
            new = new.view_as(cur[a])
            with torch.no_grad():
                hit = self._is_adv(model(new), y[a], None if target is None else target[a])
            cost.forward += len(a)
            dist = lp_norm(new - x[a], norm)
            closer = hit & (dist < best_norm[a])
            rows = a[closer]
            best[rows], best_norm[rows] = new[closer], dist[closer]
            first = closer & (found_at[a] < 0)
            found_at[a[first]] = i + 1
            back = (1 - self.beta) * x[a] + self.beta * new
            cur[a] = torch.where(batch_view(hit, new), back, new)
            if self.eps is not None:  # bounded use: a sample is done once it is broken within eps
                active = a[~(best_norm[a] <= self.eps)]
        return best, best_norm, found_at, used

    def _search(self, model, x, y, target, adv, cost):
        """Bisection on t in [0, 1] for the smallest adversarial x + t (adv - x) (forward passes only)."""
        lo = torch.zeros(len(x), device=x.device)
        hi = torch.ones(len(x), device=x.device)
        for _ in range(self.search_steps):
            mid = (lo + hi) / 2
            with torch.no_grad():
                hit = self._is_adv(model(x + batch_view(mid, x) * (adv - x)), y, target)
            cost.forward += len(x)
            hi, lo = torch.where(hit, mid, hi), torch.where(hit, lo, mid)
        return x + batch_view(hi, x) * (adv - x)

    def _attack(self, model, x, y, target, aim, cost, generator):
        best, best_norm, found_at, used = self.run(model, x, y, target, aim, cost)
        for _ in range(self.restarts - 1):
            radius = torch.where(torch.isfinite(best_norm), best_norm, torch.full_like(best_norm, self.eps or 1.0))
            if self.eps is not None:
                radius = radius.clamp(max=self.eps)
            noise = torch.rand(x.shape, generator=generator, device=x.device) * 2 - 1
            if self.norm == "l2":
                noise = noise / batch_view(noise.flatten(1).norm(dim=1).clamp_min(1e-12), x)
            else:
                noise = noise / batch_view(noise.flatten(1).abs().amax(1).clamp_min(1e-12), x)
            start = (x + noise * batch_view(radius / 2, x)).clamp(0.0, 1.0)
            b2, n2, f2, u2 = self.run(model, x, y, target, aim, cost, start)
            better = n2 < best_norm
            found_at = torch.where(better & (found_at < 0), f2 + used, found_at)
            used += u2
            best[better], best_norm[better] = b2[better], n2[better]
        ok = torch.isfinite(best_norm)
        if self.search_steps > 0 and ok.any():
            rows = ok.nonzero().squeeze(1)
            t = None if target is None else target[rows]
            best[rows] = self._search(model, x[rows], y[rows], t, best[rows], cost)
        if self.eps is not None:
            best = self.threat.enforce(best, x)
        return best, ok, found_at, used

    def perturb(self, model, x, y, target, cost):
        generator = None if self.seed is None else torch.Generator(device=x.device).manual_seed(self.seed)
        if target is not None or self.targets is None:
            adv, _, found_at, used = self._attack(model, x, y, target, target, cost, generator)
            self._extra = {"broke_at_step": found_at.cpu(), "gradient_calls": used.cpu()}
            return adv
        # FAB-T: each of the most likely wrong classes in turn, on the samples still unbroken
        n = len(x)
        clean, ranked = ranked_wrong_classes(model, x, y, cost)
        adv = x.clone()
        adv_norm = torch.full((n,), float("inf"), device=x.device)
        found = torch.full((n,), -1, dtype=torch.long, device=x.device)
        used = torch.zeros(n, dtype=torch.long, device=x.device)
        rank_of = torch.full((n,), -1, dtype=torch.long, device=x.device)
        bound = self.eps if self.eps is not None else float("inf")
        for rank in range(min(self.targets, clean.shape[1] - 1)):
            todo = (adv_norm > bound).nonzero().squeeze(1) if self.eps is not None else torch.arange(n, device=x.device)
            if len(todo) == 0:
                break
            b, ok, f2, u2 = self._attack(model, x[todo], y[todo], None, ranked[todo, rank], cost, generator)
            d = torch.where(ok, lp_norm(b - x[todo], self.norm), torch.full_like(adv_norm[todo], float("inf")))
            better = d < adv_norm[todo]
            rows = todo[better]
            adv[rows], adv_norm[rows] = b[better], d[better]
            found[rows] = (f2 + used[todo])[better]
            rank_of[rows] = rank + 1
            used[todo] += u2
        self._extra = {"broke_at_step": found.cpu(), "gradient_calls": used.cpu(), "target_rank": rank_of.cpu()}
        return adv
