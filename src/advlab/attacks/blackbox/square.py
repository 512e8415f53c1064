"""Square Attack (Andriushchenko, Croce, Flammarion & Hein 2020, "Square Attack: a query-efficient
black-box adversarial attack via random search"), Linf (their Algorithm 2) and L2 (Algorithm 3).

Random search on the margin loss: each iteration changes one random square window of the current
perturbation and keeps the change only if the oracle's margin went down. One query per image per
iteration (plus one for the initialization). The window side shrinks with the fraction p of pixels
changed, halved on the paper's fixed schedule.
"""

from __future__ import annotations

import math

import torch

from advlab.attacks.blackbox.base import BlackBoxAttack, QueryRun
from advlab.errors import check_range

# iterations (on a 10,000-iteration scale) after which p is halved (Andriushchenko et al. 2020, App. A)
P_SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_selection(p_init: float, iteration: int, max_iterations: int) -> float:
    """The fraction of pixels to change at this iteration (halving schedule rescaled to the budget)."""
    it = int(iteration / max(max_iterations, 1) * 10_000)
    return p_init / 2 ** sum(it > mark for mark in P_SCHEDULE)


def window_masks(n: int, size: int, h: int, w: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 1, h, w) boolean masks of one random size x size square per image."""
    rows = torch.randint(0, h - size + 1, (n,), generator=generator)
    cols = torch.randint(0, w - size + 1, (n,), generator=generator)
    r, c = torch.arange(h), torch.arange(w)
    in_rows = (r[None, :] >= rows[:, None]) & (r[None, :] < rows[:, None] + size)
    in_cols = (c[None, :] >= cols[:, None]) & (c[None, :] < cols[:, None] + size)
    return (in_rows[:, :, None] & in_cols[:, None, :])[:, None]


def pseudo_gaussian(h: int, w: int) -> torch.Tensor:
    """Sum of nested centred rectangles weighted 1/(k+1)^2: peaked in the middle, unit L2 norm
    (the building block of the L2 Square Attack, Sec. 3.2)."""
    pattern = torch.zeros(h, w, dtype=torch.float64)
    ch, cw = h // 2, w // 2
    for k in range(max(ch, cw) + 1):
        pattern[max(ch - k, 0):min(ch + k + 1, h), max(cw - k, 0):min(cw + k + 1, w)] += 1.0 / (k + 1) ** 2
    return pattern / pattern.norm()


def meta_pseudo_gaussian(size: int, flip: bool) -> torch.Tensor:
    """Two pseudo-gaussian halves of opposite sign (transposed when flip), unit L2 norm."""
    half = max(size // 2, 1)
    pattern = torch.zeros(size, size, dtype=torch.float64)
    pattern[:half] = pseudo_gaussian(half, size)
    if size - half > 0:
        pattern[half:] = -pseudo_gaussian(size - half, size)
    pattern = pattern / pattern.norm()
    return pattern.T if flip else pattern


class Square(BlackBoxAttack):
    """Square Attack under Linf or L2 with a per-image query limit.

    p_init: initial fraction of pixels in the window (paper: 0.05 Linf and 0.1 L2 on ImageNet; larger
    values such as 0.3 suit 28x28 MNIST).
    """

    name = "square"

    def __init__(self, eps: float = 0.3, norm: str = "linf", max_queries: int = 10_000, p_init: float | None = None,
                 seed: int = 0) -> None:
        super().__init__(eps, norm, max_queries, seed)
        default = 0.05 if norm == "linf" else 0.1
        self.p_init = check_range(default if p_init is None else p_init, "p_init", 0.0, 1.0, lo_open=True)

    def window_side(self, iteration: int, h: int, w: int, minimum: int = 1) -> int:
        p = p_selection(self.p_init, iteration, self.max_queries)
        side = int(round(math.sqrt(p * h * w)))
        return max(min(side, h - 1, w - 1), minimum, 1)

    def run(self, state: QueryRun, generator: torch.Generator) -> None:
        x = state.x.cpu()
        n, c, h, w = x.shape
        idx = state.active(1)
        if len(idx) == 0:
            return
        init = self._init_linf(x[idx], generator) if self.norm == "linf" else self._init_l2(x[idx], generator)
        # the current iterate of every image; the state keeps the best, which is the same for Square
        current = x.clone()
        current[idx] = init
        _, margins = state.query(init.to(state.x.device), idx)
        loss = torch.full((n,), float("inf"), dtype=torch.float64)
        loss[idx] = margins
        for iteration in range(1, self.max_queries):
            idx = state.active(1)
            if len(idx) == 0:
                return
            if self.norm == "linf":
                candidates = self._step_linf(x[idx], current[idx], iteration, generator)
            else:
                candidates = self._step_l2(x[idx], current[idx], iteration, generator)
            _, margins = state.query(candidates.to(state.x.device), idx)
            better = margins < loss[idx]
            current[idx[better]] = candidates[better]
            loss[idx[better]] = margins[better]

    # --- Linf (Algorithm 2) ---
    def _init_linf(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Vertical stripes: each column of each channel moved by +-eps."""
        n, c, h, w = x.shape
        signs = torch.randint(0, 2, (n, c, 1, w), generator=generator).to(x.dtype) * 2 - 1
        return (x + self.eps * signs).clamp(0.0, 1.0)

    def _step_linf(self, x: torch.Tensor, current: torch.Tensor, iteration: int,
                   generator: torch.Generator) -> torch.Tensor:
        n, c, h, w = x.shape
        side = self.window_side(iteration, h, w)
        mask = window_masks(n, side, h, w, generator)
        delta = current - x
        new_values = self.eps * (torch.randint(0, 2, (n, c, 1, 1), generator=generator).to(x.dtype) * 2 - 1)
        # redraw the signs of images whose window would not change (the paper's resampling)
        for _ in range(10):
            window = torch.where(mask, delta, torch.zeros_like(delta))
            same = ((window - new_values * mask).abs() < 1e-7).flatten(1).all(1)
            clipped = (((x + new_values).clamp(0, 1) - x - delta).abs() * mask < 1e-7).flatten(1).all(1)
            stuck = same | clipped
            if not stuck.any():
                break
            redraw = torch.randint(0, 2, (n, c, 1, 1), generator=generator).to(x.dtype) * 2 - 1
            new_values = torch.where(stuck.view(-1, 1, 1, 1), self.eps * redraw, new_values)
        delta = torch.where(mask, new_values.expand_as(delta), delta)
        return (x + delta).clamp(0.0, 1.0)

    # --- L2 (Algorithm 3) ---
    def _init_l2(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A grid of pseudo-gaussian squares with random signs, scaled to norm eps."""
        n, c, h, w = x.shape
        side = max(h // 5, 3)
        delta = torch.zeros_like(x, dtype=torch.float64)
        for r in range(0, h, side):
            for s in range(0, w, side):
                hh, ww = min(side, h - r), min(side, w - s)
                signs = torch.randint(0, 2, (n, c, 1, 1), generator=generator).double() * 2 - 1
                delta[:, :, r:r + hh, s:s + ww] += pseudo_gaussian(hh, ww) * signs
        delta = delta / delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * self.eps
        return (x + delta.to(x.dtype)).clamp(0.0, 1.0)

    def _step_l2(self, x: torch.Tensor, current: torch.Tensor, iteration: int,
                 generator: torch.Generator) -> torch.Tensor:
        """Move mass from window W2 into window W1 (a new meta-pseudo-gaussian there), keeping the
        total norm at eps: ||delta_new[W1]||^2 per channel = ||delta[W1 u W2]||^2 + unused budget / c."""
        n, c, h, w = x.shape
        side = self.window_side(iteration, h, w, minimum=3)
        delta = (current - x).double()
        w1 = window_masks(n, side, h, w, generator)
        w2 = window_masks(n, side, h, w, generator)
        union = w1 | w2
        spare = (self.eps ** 2 - delta.flatten(1).pow(2).sum(1)).clamp_min(0.0)
        mass = (delta * union).pow(2).sum((2, 3)) + spare[:, None] / c  # (n, c)
        flips = torch.randint(0, 2, (n,), generator=generator).bool()
        signs = torch.randint(0, 2, (n, c), generator=generator).double() * 2 - 1
        pattern = meta_pseudo_gaussian(side, False)
        patterns = torch.where(flips.view(-1, 1, 1), pattern.T, pattern)[:, None] * signs[:, :, None, None]
        # index grids of each image's W1 window: (n, c, side, side) views of delta
        first_row = w1[:, 0].any(2).float().argmax(1)
        first_col = w1[:, 0].any(1).float().argmax(1)
        grid = torch.arange(side)
        at = (torch.arange(n).view(-1, 1, 1, 1), torch.arange(c).view(1, -1, 1, 1),
              (first_row[:, None] + grid).view(n, 1, side, 1), (first_col[:, None] + grid).view(n, 1, 1, side))
        old = delta[at]
        old_unit = old / old.flatten(2).norm(dim=2).clamp_min(1e-12)[:, :, None, None]
        direction = old_unit + patterns
        direction = direction / direction.flatten(2).norm(dim=2).clamp_min(1e-12)[:, :, None, None]
        new = delta.clone()
        new[union.expand_as(new)] = 0.0
        new[at] = direction * mass.sqrt()[:, :, None, None]
        total = new.flatten(1).norm(dim=1).clamp_min(1e-12)
        new = new * (self.eps / total).clamp(max=1.0).view(-1, 1, 1, 1)  # float rounding guard
        return (x + new.to(x.dtype)).clamp(0.0, 1.0)
