"""Gradient estimation by finite differences, and the ZOO attack built on it.

The lecture's estimate of one partial derivative from two oracle answers,

    dF(x)/dx_ij  ~  (F(x + delta e_ij) - F(x)) / delta,

and its symmetric form (F(x + h e_i) - F(x - h e_i)) / (2h), used by ZOO (Chen, Zhang, Sharma, Yi &
Hsieh 2017, "ZOO: zeroth order optimization based black-box attacks", eq. 6) on a random batch of
coordinates per iteration, each updated by its own Adam step (their Algorithm 2, ZOO-ADAM) on the
margin of log-probabilities (their eq. 4, kappa = 0), projected onto the threat model's ball.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from advlab.attacks.blackbox.base import BlackBoxAttack, QueryRun
from advlab.attacks.common import check_positive_int
from advlab.errors import AdvlabError, check_range

DIFFERENCES = ("forward", "symmetric")


def finite_difference_gradient(func: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, delta: float = 1e-3,
                               coords: torch.Tensor | None = None, mode: str = "forward",
                               batch: int = 256) -> torch.Tensor:
    """Estimate the gradient of a per-sample scalar function func at each image of x.

    func maps a batch (M, C, H, W) to M values (e.g. a class log-probability read from an oracle).
    coords: flat coordinate indices to estimate (default: all); other entries are left at 0.
    mode "forward" is the lecture's (F(x + delta e) - F(x)) / delta (one extra call per coordinate);
    "symmetric" is (F(x + delta e) - F(x - delta e)) / (2 delta), second-order accurate.
    Probes leaving [0, 1] are clipped and divided by the step actually taken.
    """
    if mode not in DIFFERENCES:
        raise AdvlabError(f"unknown finite-difference mode {mode!r}; choose one of {', '.join(DIFFERENCES)}")
    check_range(delta, "delta", 0.0, 1.0, lo_open=True)
    n = x.shape[0]
    flat = x.flatten(1)
    d = flat.shape[1]
    coords = torch.arange(d) if coords is None else coords.flatten().long()
    grad = torch.zeros_like(flat)
    base = func(x) if mode == "forward" else None
    for start in range(0, len(coords), batch):
        chunk = coords[start:start + batch]
        m = len(chunk)
        eye = torch.zeros(m, d, dtype=x.dtype, device=x.device)
        eye[torch.arange(m), chunk] = 1.0
        plus = (flat[:, None, :] + delta * eye[None]).clamp(0.0, 1.0)  # (n, m, d)
        if mode == "forward":
            minus = flat[:, None, :].expand_as(plus)
            f_minus = base[:, None].expand(n, m)
        else:
            minus = (flat[:, None, :] - delta * eye[None]).clamp(0.0, 1.0)
            f_minus = func(minus.reshape(n * m, *x.shape[1:])).view(n, m)
        f_plus = func(plus.reshape(n * m, *x.shape[1:])).view(n, m)
        step = (plus - minus)[:, torch.arange(m), chunk]  # the step each probe really took
        grad[:, chunk] = ((f_plus - f_minus) / step.clamp_min(1e-12)).to(grad.dtype)
    return grad.view_as(x)


class ZOO(BlackBoxAttack):
    """ZOO-ADAM with symmetric differences on `coords_per_step` random coordinates per iteration.

    Each iteration costs 2 * coords_per_step + 1 queries per image (the probes, then the new iterate).
    """

    name = "zoo"

    def __init__(self, eps: float = 0.3, norm: str = "linf", max_queries: int = 10_000, coords_per_step: int = 128,
                 h: float = 1e-4, lr: float = 0.1, beta1: float = 0.9, beta2: float = 0.999, seed: int = 0) -> None:
        super().__init__(eps, norm, max_queries, seed)
        self.coords_per_step = check_positive_int(coords_per_step, "coords_per_step")
        self.h = check_range(h, "h (finite-difference step)", 0.0, 1.0, lo_open=True)
        self.lr = check_range(lr, "lr", 0.0, 1e3, lo_open=True)
        self.beta1 = check_range(beta1, "beta1", 0.0, 1.0)
        self.beta2 = check_range(beta2, "beta2", 0.0, 1.0)

    def run(self, state: QueryRun, generator: torch.Generator) -> None:
        x = state.x.cpu()
        n = x.shape[0]
        d = x[0].numel()
        b = min(self.coords_per_step, d)
        current = x.clone().flatten(1)
        m = torch.zeros(n, d, dtype=torch.float64)
        v = torch.zeros(n, d, dtype=torch.float64)
        t = torch.zeros(n, d, dtype=torch.float64)
        while True:
            idx = state.active(2 * b + 1)
            if len(idx) == 0:
                return
            k = len(idx)
            coords = torch.stack([torch.randperm(d, generator=generator)[:b] for _ in range(k)])  # (k, b)
            eye = torch.zeros(k, b, d, dtype=x.dtype)
            eye.scatter_(2, coords[:, :, None], 1.0)
            base = current[idx][:, None, :]
            plus = (base + self.h * eye).clamp(0.0, 1.0)
            minus = (base - self.h * eye).clamp(0.0, 1.0)
            probes = torch.cat([plus, minus], 1).reshape(k * 2 * b, *x.shape[1:])
            _, margins = state.query(probes.to(state.x.device), idx.repeat_interleave(2 * b))
            margins = margins.view(k, 2 * b)
            step = (plus - minus).gather(2, coords[:, :, None]).squeeze(2).double().clamp_min(1e-12)
            g = (margins[:, :b] - margins[:, b:]) / step  # (k, b): d margin / d x_coord
            sel = (idx[:, None], coords)
            m[sel] = self.beta1 * m[sel] + (1 - self.beta1) * g
            v[sel] = self.beta2 * v[sel] + (1 - self.beta2) * g * g
            t[sel] += 1
            mhat = m[sel] / (1 - self.beta1 ** t[sel])
            vhat = v[sel] / (1 - self.beta2 ** t[sel])
            update = torch.zeros(k, d, dtype=torch.float64)
            update[torch.arange(k)[:, None].expand(k, b), coords] = self.lr * mhat / (vhat.sqrt() + 1e-8)
            moved = (current[idx] - update.to(x.dtype)).view(k, *x.shape[1:])  # descend the margin
            moved = self.threat.project(moved, x[idx])
            current[idx] = moved.flatten(1)
            state.query(moved.to(state.x.device), idx)
