"""HopSkipJump (Chen, Jordan & Wainwright 2020, "HopSkipJumpAttack: a query-efficient decision-based
attack", Algorithm 2), untargeted or targeted, L2 or Linf, from top labels only.

From an adversarial starting point, repeat: binary search to the decision boundary between the
image and the adversarial point; estimate the boundary's normal from the signs of B_t random probes
at distance delta_t (their eq. 9, with the mean of the signs subtracted as a baseline, eq. 16);
step along it with a geometric step-size search; binary search back to the boundary. The image is
broken once an adversarial point within eps is found (every queried point counts, see QueryRun).
"""

from __future__ import annotations

import math

import torch

from advlab.attacks.blackbox.base import BlackBoxAttack, QueryRun
from advlab.attacks.common import batch_view, check_positive_int, l2_normalize
from advlab.errors import check_range


class HopSkipJump(BlackBoxAttack):
    """Decision-based attack. init_evals: probes at the first iteration (B_t = init_evals * sqrt(t),
    capped by max_evals); gamma sets the binary-search threshold theta (gamma / d^1.5 for L2,
    gamma / d^2 for Linf) and the probe radius delta_t from the second iteration on;
    first_probe_radius is delta_1 (0.1 in the authors' code and in ART; 0 takes the paper's delta_t
    from t = 1 too).

    eps_probe (not in the paper, which minimizes the distance instead of aiming at a given eps):
    query x + eps * (the gradient estimate's sign for Linf, its unit vector for L2) as the estimate
    forms: the B_t probes of an iteration go out in eps_probes_per_iteration chunks, and after each
    the estimate from the probes so far is probed, one query each. In the iteration the budget cuts
    short, the probes shrink so that it still ends with its eps probes. eps_probe=False with
    first_probe_radius=0 is the paper's Algorithm 2."""

    name = "hopskipjump"
    needs_scores = False

    def __init__(self, eps: float = 0.3, norm: str = "linf", max_queries: int = 10_000, init_evals: int = 100,
                 max_evals: int = 1000, gamma: float = 1.0, init_tries: int = 100, seed: int = 0,
                 eps_probe: bool = True, eps_probes_per_iteration: int = 8, first_probe_radius: float = 0.1) -> None:
        super().__init__(eps, norm, max_queries, seed)
        self.eps_probe = bool(eps_probe)
        self.eps_probes_per_iteration = check_positive_int(eps_probes_per_iteration, "eps_probes_per_iteration")
        self.first_probe_radius = check_range(first_probe_radius, "first_probe_radius", 0.0, 1.0)
        self.init_evals = check_positive_int(init_evals, "init_evals")
        self.max_evals = check_positive_int(max_evals, "max_evals")
        self.gamma = check_range(gamma, "gamma", 0.0, 1e6, lo_open=True)
        self.init_tries = check_positive_int(init_tries, "init_tries")

    # --- helpers on the active subset; each call queries one point per listed image ---
    def _is_adv(self, state: QueryRun, xs: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        labels, _ = state.query(xs.to(state.x.device), idx)
        cls = (state.y if state.target is None else state.target)[idx].cpu()
        return labels != cls if state.target is None else labels == cls

    def _gradient(self, hit: torch.Tensor, u_eff: torch.Tensor) -> torch.Tensor:
        """The boundary normal from the probes' answers (eq. 9 with the baseline of eq. 16)."""
        phi = hit.to(u_eff.dtype) * 2 - 1
        mean_phi = phi.mean(1, keepdim=True)
        centred = torch.where((mean_phi.abs() == 1), phi, phi - mean_phi)
        return (centred.view(*hit.shape, *[1] * (u_eff.dim() - 2)) * u_eff).mean(1)

    def _cuts(self, evals: int) -> list[int]:
        """After how many of the iteration's probes the estimate so far is eps-probed (the last: all)."""
        if not self.eps_probe:
            return [evals]
        chunk = math.ceil(evals / self.eps_probes_per_iteration)
        return [*range(chunk, evals, chunk), evals]

    def _distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        d = (a - b).flatten(1)
        return d.abs().amax(1) if self.norm == "linf" else d.norm(dim=1)

    def _blend(self, x: torch.Tensor, adv: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """Points between x (alpha 0) and adv (alpha 1): a line for L2, a shrinking box for Linf."""
        if self.norm == "l2":
            a = batch_view(alpha, x)
            return (1 - a) * x + a * adv
        radius = batch_view(alpha * self._distance(adv, x), x)
        return torch.min(torch.max(adv, x - radius), x + radius)

    def _binary_search(self, state, x, adv, idx, theta, alive) -> tuple[torch.Tensor, torch.Tensor]:
        """Shrink each adversarial point toward its image until the bracket is below theta.

        Only rows still alive (with queries left) are queried; the others keep their point."""
        low = torch.zeros(len(idx), dtype=x.dtype)
        high = torch.ones(len(idx), dtype=x.dtype)
        dist = self._distance(adv, x).clamp_min(1e-12)
        while True:
            open_ = alive & ((high - low) * dist > theta) & (state.left()[idx] >= 1) & ~state.success[idx]
            if not open_.any():
                break
            rows = torch.nonzero(open_).flatten()
            mid = (low[rows] + high[rows]) / 2
            adv_mid = self._is_adv(state, self._blend(x[rows], adv[rows], mid), idx[rows])
            high[rows] = torch.where(adv_mid, mid, high[rows])
            low[rows] = torch.where(adv_mid, low[rows], mid)
        return self._blend(x, adv, high), high

    def _initialize(self, state: QueryRun, x: torch.Tensor, idx: torch.Tensor,
                    generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Uniform noise images until one is adversarial, per image (up to init_tries)."""
        start = x[idx].clone()
        found = torch.zeros(len(idx), dtype=torch.bool)
        for _ in range(self.init_tries):
            rows = torch.nonzero(~found & (state.left()[idx] >= 1) & ~state.success[idx]).flatten()
            if len(rows) == 0:
                break
            noise = torch.rand((len(rows), *x.shape[1:]), generator=generator, dtype=x.dtype)
            hit = self._is_adv(state, noise, idx[rows])
            start[rows[hit]] = noise[hit]
            found[rows[hit]] = True
            if found.all():
                break
        # noise the oracle files under the image's own class: start from the nearest other image of
        # the batch whose (already known) clean label meets the goal, as Foolbox and ART allow
        for row in torch.nonzero(~found).flatten().tolist():
            i = int(idx[row])
            pred = state.clean_pred
            ok = (pred != state.y[i].cpu()) if state.target is None else (pred == state.target[i].cpu())
            ok &= pred >= 0
            ok[i] = False
            if ok.any():
                others = torch.nonzero(ok).flatten()
                j = others[self._distance(x[others], x[i:i + 1].expand(len(others), *x.shape[1:])).argmin()]
                start[row] = x[j]
                found[row] = True
        return start, found

    def run(self, state: QueryRun, generator: torch.Generator) -> None:
        x_all = state.x.cpu()
        idx = state.active(2)
        if len(idx) == 0:
            return
        x = x_all[idx]
        d = x[0].numel()
        theta = self.gamma / (d ** 1.5 if self.norm == "l2" else d ** 2)
        adv, alive = self._initialize(state, x_all, idx, generator)
        adv, _ = self._binary_search(state, x, adv, idx, theta, alive)
        state.extra["min_adv_distance"] = torch.full((state.n,), float("inf"))
        t = 0
        while True:
            alive &= ~state.success[idx] & (state.left()[idx] >= 2)
            if not alive.any():
                return
            t += 1
            rows = torch.nonzero(alive).flatten()
            xr, ar, ir = x[rows], adv[rows], idx[rows]
            dist = self._distance(ar, xr)
            # probe radius delta_t (Sec. 4.1): sqrt(d) theta dist_{t-1} for L2, d theta dist for Linf
            delta = (math.sqrt(d) if self.norm == "l2" else d) * theta * dist
            if t == 1 and self.first_probe_radius > 0:
                # the authors' code (and ART) start with 0.1: from a noise start the boundary point is
                # far from x, and dist / d there probes a region too small to tell its normal well
                delta = torch.full_like(delta, self.first_probe_radius)
            evals = int(min(self.init_evals * math.sqrt(t), self.max_evals))
            # the iteration the budget cuts short: fewer probes, so that it still ends with its eps probes
            left = int(state.left()[ir].min())
            while evals > 1 and evals + len(self._cuts(evals)) > left:
                evals -= 1
            u = torch.randn((len(rows), evals, *x.shape[1:]), generator=generator, dtype=x.dtype)
            if self.norm == "linf":
                u = torch.rand((len(rows), evals, *x.shape[1:]), generator=generator, dtype=x.dtype) * 2 - 1
            u = u / u.flatten(2).norm(dim=2).clamp_min(1e-12).view(len(rows), evals, *[1] * (x.dim() - 1))
            probes = (ar[:, None] + delta.view(-1, 1, *[1] * (x.dim() - 1)) * u).clamp(0.0, 1.0)
            u_eff = (probes - ar[:, None]) / delta.clamp_min(1e-12).view(-1, 1, *[1] * (x.dim() - 1))
            hit = torch.zeros((len(rows), evals), dtype=torch.bool)
            direction = torch.zeros_like(ar)
            cuts = self._cuts(evals)
            for lo, hi in zip([0, *cuts[:-1]], cuts, strict=True):
                live = (state.left()[ir] >= hi - lo) & ~state.success[ir]
                if not live.any():
                    break
                p = torch.nonzero(live).flatten()
                hit[p, lo:hi] = self._is_adv(state, probes[p, lo:hi].flatten(0, 1),
                                             ir[p].repeat_interleave(hi - lo)).view(len(p), hi - lo)
                grad = self._gradient(hit[:, :hi], u_eff[:, :hi])
                direction = grad.sign() if self.norm == "linf" else l2_normalize(grad)
                if self.eps_probe:
                    # the point of the eps-ball furthest along the estimated boundary normal: for a locally
                    # linear boundary it is adversarial as soon as the image's distance to the boundary
                    # is below eps, often iterations before the boundary point itself comes within eps
                    live = (state.left()[ir] >= 1) & ~state.success[ir]
                    if live.any():
                        p = torch.nonzero(live).flatten()
                        self._is_adv(state, (xr[p] + self.eps * direction[p]).clamp(0.0, 1.0), ir[p])
            # geometric step-size search (Sec. 4.3): xi = dist / sqrt(t), halved until adversarial
            xi = dist / math.sqrt(t)
            moved = ar.clone()
            pending = torch.ones(len(rows), dtype=torch.bool)
            for _ in range(25):
                pending &= (state.left()[ir] >= 1) & ~state.success[ir]
                if not pending.any():
                    break
                p = torch.nonzero(pending).flatten()
                cand = (ar[p] + batch_view(xi[p], ar[p]) * direction[p]).clamp(0.0, 1.0)
                ok = self._is_adv(state, cand, ir[p])
                moved[p[ok]] = cand[ok]
                pending[p[ok]] = False
                xi[p[~ok]] /= 2
            new_adv, _ = self._binary_search(state, xr, moved, ir, theta, torch.ones(len(rows), dtype=torch.bool))
            adv[rows] = new_adv
            best = state.extra["min_adv_distance"]
            best[ir] = torch.minimum(best[ir], self._distance(new_adv, xr))
