"""NES gradient estimation and the PGD attack on it (Ilyas, Engstrom, Athalye & Lin 2018,
"Black-box adversarial attacks with limited queries and information", Algorithm 1 and Sec. 2.2).

The gradient of the margin is estimated from Gaussian probes with antithetic sampling,

    g = 1 / (2 n sigma) * sum_i [ F(x + sigma u_i) - F(x - sigma u_i) ] u_i,   u_i ~ N(0, I),

and the iterate takes a projected steepest-descent step (sign(g) for Linf, g/||g|| for L2).
Each iteration costs 2 * samples + 1 queries per image (probes, then the new iterate).
"""

from __future__ import annotations

import torch

from advlab.attacks.blackbox.base import BlackBoxAttack, QueryRun
from advlab.attacks.common import check_positive_int, steepest_ascent
from advlab.errors import check_range


def nes_gradient(func, x: torch.Tensor, sigma: float, samples: int, generator: torch.Generator) -> torch.Tensor:
    """The antithetic NES estimate of the gradient of func (batch -> per-sample values) at each image of x."""
    n = x.shape[0]
    u = torch.randn((n, samples, *x.shape[1:]), generator=generator, dtype=x.dtype)
    probes = torch.cat([x[:, None] + sigma * u, x[:, None] - sigma * u], 1).clamp(0.0, 1.0)
    values = func(probes.reshape(n * 2 * samples, *x.shape[1:])).view(n, 2 * samples).to(x.dtype)
    diff = values[:, :samples] - values[:, samples:]
    return (diff.view(n, samples, *[1] * (x.dim() - 1)) * u).sum(1) / (2 * samples * sigma)


class NES(BlackBoxAttack):
    """PGD on NES gradient estimates of the log-probability margin.

    step_size defaults to eps / 10 (Linf) or eps / 5 (L2); sigma is the probe scale in pixel units.
    """

    name = "nes"

    def __init__(self, eps: float = 0.3, norm: str = "linf", max_queries: int = 10_000, samples: int = 50,
                 sigma: float = 1e-3, step_size: float | None = None, seed: int = 0) -> None:
        super().__init__(eps, norm, max_queries, seed)
        self.samples = check_positive_int(samples, "samples")
        self.sigma = check_range(sigma, "sigma", 0.0, 1.0, lo_open=True)
        default = self.eps / (10 if norm == "linf" else 5)
        self.step_size = check_range(default if step_size is None else step_size, "step_size", 0.0, 1e6,
                                     lo_open=True)

    def run(self, state: QueryRun, generator: torch.Generator) -> None:
        x = state.x.cpu()
        current = x.clone()
        per_step = 2 * self.samples + 1
        while True:
            idx = state.active(per_step)
            if len(idx) == 0:
                return
            owners = idx.repeat_interleave(2 * self.samples)

            def margin_of(probes: torch.Tensor, owners=owners) -> torch.Tensor:
                return state.query(probes.to(state.x.device), owners)[1]

            g = nes_gradient(margin_of, current[idx], self.sigma, self.samples, generator)
            moved = current[idx] - self.step_size * steepest_ascent(g, self.norm)  # descend the margin
            moved = self.threat.project(moved, x[idx])
            current[idx] = moved
            state.query(moved.to(state.x.device), idx)
