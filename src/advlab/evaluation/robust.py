"""Robust accuracy over a list of epsilons in one call, and accuracy-versus-epsilon curves from the
per-sample norms of minimal-perturbation attacks.

Work is never repeated: samples misclassified to begin with are never attacked, and since the eps
balls are nested, a sample broken at one eps is broken at every larger one, so each eps only attacks
the samples that survived the previous (smaller) one. Attacks that take a start point (PGD) begin a
survivor at the next eps from the perturbation the previous eps ended with, stretched to the new
radius (a warm start in the direction of the highest loss found so far; later restarts are random as
usual). Attacks built with early_stop (PGD) also stop working on a sample the moment it is
misclassified. Robust accuracy is therefore what attacking every sample at every eps would give, or
lower (a stronger evaluation), at a fraction of the cost.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from advlab.attacks.base import Attack, AttackResult, Cost
from advlab.errors import AdvlabError
from advlab.evaluation.attack_run import attack_dataset
from advlab.runtime import BatchSize, as_batch_size, eval_mode

AttackFactory = Callable[[float], Attack]


def _clean_logits(model: nn.Module, x: torch.Tensor, device, batch: BatchSize) -> torch.Tensor:
    with eval_mode(model), torch.no_grad():
        return batch.cat(lambda s: model(x[s].to(device)).cpu(), len(x))


@dataclass
class RobustEvaluation:
    """Robust accuracy per attack and eps, and per sample the smallest eps that broke it (inf: none)."""

    eps: list[float]
    accuracy: dict[str, list[float]]  # attack name -> robust accuracy at each eps
    broken_at: dict[str, torch.Tensor]  # attack name -> per-sample smallest breaking eps
    clean_accuracy: float
    n: int
    cost: dict[str, Cost] = field(default_factory=dict)
    # with recheck: accuracy under each eps's attack alone (every clean-correct sample attacked at
    # every eps); above `accuracy` where an attack that broke a sample at a smaller eps fails at a larger
    independent: dict[str, list[float]] = field(default_factory=dict)

    def worst_case(self) -> list[float]:
        """Robust accuracy against the union of all attacks (a sample counts if every attack failed)."""
        smallest = torch.stack(list(self.broken_at.values())).amin(0)
        return [(smallest > e).float().mean().item() for e in self.eps]

    def to_dict(self) -> dict:
        out = {"eps": self.eps, "n": self.n, "clean_accuracy": self.clean_accuracy, "robust_accuracy": self.accuracy,
               "worst_case": self.worst_case(), "cost": {k: c.to_dict() for k, c in self.cost.items()}}
        if self.independent:
            out["independent_accuracy"] = self.independent
        return out


def robust_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attacks: dict[str, AttackFactory],
                    eps: Sequence[float], batch_size: int | BatchSize = 256, device: torch.device | str = "cpu",
                    progress: bool = True, recheck: bool = False, warm_start: bool = True) -> RobustEvaluation:
    """Robust accuracy of `model` on (x, y) for each attack (a factory eps -> Attack) at each eps.

    Example: ``robust_accuracy(model, x, y, {"pgd": lambda e: PGD(eps=e, early_stop=True)}, [0, 0.1, 0.3])``.
    eps = 0 is clean accuracy exactly (no attack is run there). recheck also attacks, at each eps,
    the samples broken at a smaller one, to fill ``independent`` (the gradient-masking check that a
    larger eps never gives a higher accuracy); the nested ``accuracy`` is the same either way.
    warm_start: attacks that accept a start point begin each survivor from the previous eps's final
    perturbation scaled by eps / previous eps (off under recheck, whose independent figures must come
    from each eps's attack alone).
    """
    if not attacks:
        raise AdvlabError("give at least one attack")
    eps_sorted = sorted(float(e) for e in eps)
    # NaN compares false with everything: sorted() leaves it anywhere and no check below would fire
    if not eps_sorted or not all(math.isfinite(e) and e >= 0 for e in eps_sorted):
        raise AdvlabError(f"eps must be a non-empty list of finite non-negative numbers, got {list(eps)}")
    device = torch.device(device)
    batch = as_batch_size(batch_size)  # halves on out-of-memory, shared by every loop below
    clean_logits = _clean_logits(model, x, device, batch)
    correct = clean_logits.argmax(1) == y.cpu()
    warm_start = warm_start and not recheck
    accuracy: dict[str, list[float]] = {}
    broken: dict[str, torch.Tensor] = {}
    costs: dict[str, Cost] = {}
    independent: dict[str, list[float]] = {}
    for name, factory in attacks.items():
        broken_at = torch.where(correct, torch.full((len(x),), math.inf), torch.zeros(len(x)))
        cost = Cost()
        row, alone = [], []
        last, last_eps = None, 0.0  # where the previous eps's attack left each sample (for warm starts)
        bar = tqdm(eps_sorted, desc=f"robust accuracy ({name})", disable=not progress, leave=False)
        for e in bar:
            todo = (correct if recheck else broken_at > e).nonzero().squeeze(1)
            survived = torch.zeros(len(x), dtype=torch.bool)
            if e > 0 and len(todo):
                attack = factory(e)
                warm = warm_start and getattr(attack, "accepts_start", False)
                if warm and last is None:
                    last = x.clone()

                def one(s: slice, attack=attack, warm=warm, e=e, survived=survived, broken_at=broken_at,
                        cost=cost, last=last, last_eps=last_eps, todo=todo) -> None:
                    idx = todo[s]
                    start = None
                    if warm and last_eps > 0:  # the previous perturbation, stretched to this radius
                        start = (x[idx] + (last[idx] - x[idx]) * (e / last_eps)).to(device)
                    result = attack(model, x[idx].to(device), y[idx].to(device), start=start,
                                    clean_logits=clean_logits[idx].to(device))
                    if warm:
                        last[idx] = result.adv.to(last.device)
                    cost.forward += result.cost.forward
                    cost.backward += result.cost.backward
                    cost.queries += result.cost.queries
                    hit = (result.adv_pred != result.labels).cpu()
                    survived[idx[~hit]] = True
                    newly = idx[hit & (broken_at[idx] > e)]
                    broken_at[newly] = e

                batch.map(one, len(todo))
                if warm:
                    last_eps = e
            else:
                survived = broken_at > e
            row.append((broken_at > e).float().mean().item())
            alone.append(survived.float().mean().item())
            bar.set_postfix(robust=f"{row[-1]:.3f}")
        accuracy[name], broken[name], costs[name] = row, broken_at, cost
        if recheck:
            independent[name] = alone
    return RobustEvaluation(eps_sorted, accuracy, broken, correct.float().mean().item(), len(x), costs, independent)


@dataclass
class MinimalNormEvaluation:
    """Per-sample minimal perturbation norms found by a minimal-norm attack (DeepFool, C&W, L-BFGS, FAB).

    norms: 0 for samples misclassified to begin with, inf where the attack failed.
    """

    norms: torch.Tensor
    norm: str
    clean_accuracy: float
    success_rate: float
    cost: Cost

    def accuracy_at(self, eps: Sequence[float]) -> list[float]:
        """Robust accuracy at each eps: share of samples whose minimal norm exceeds eps (an upper bound)."""
        return [(self.norms > float(e)).float().mean().item() for e in eps]

    def curve(self, points: int = 50, max_eps: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        finite = self.norms[torch.isfinite(self.norms)]
        top = max_eps if max_eps is not None else (float(finite.max()) * 1.05 if len(finite) else 1.0)
        grid = np.linspace(0.0, top, points)
        return grid, np.array(self.accuracy_at(grid.tolist()))

    @property
    def median(self) -> float:
        """Median minimal norm over all samples (misclassified count as 0, failures as inf)."""
        return float(self.norms.median())

    @property
    def median_of_successes(self) -> float:
        ok = torch.isfinite(self.norms) & (self.norms > 0)
        return float(self.norms[ok].median()) if ok.any() else float("nan")

    @classmethod
    def from_result(cls, result: AttackResult, norm: str) -> MinimalNormEvaluation:
        """The per-sample minimal norms a minimal-perturbation attack's result implies: its norm where it
        succeeded, inf where it failed, 0 where the sample was misclassified to begin with."""
        found = torch.where(result.success, result.norms[norm], torch.full_like(result.norms[norm], math.inf))
        found = torch.where(result.clean_correct, found, torch.zeros_like(found))
        return cls(found, norm, result.clean_correct.float().mean().item(), result.success_rate, result.cost)

    def to_dict(self) -> dict:
        return {"norm": self.norm, "n": len(self.norms), "clean_accuracy": self.clean_accuracy,
                "success_rate": self.success_rate, "median_norm": self.median,
                "median_norm_of_successes": self.median_of_successes, "cost": self.cost.to_dict()}


def minimal_norms(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: Attack, norm: str = "l2",
                  batch_size: int | BatchSize = 256, device: torch.device | str = "cpu", progress: bool = True
                  ) -> MinimalNormEvaluation:
    """Run a minimal-perturbation attack over (x, y) in batches and collect per-sample norms."""
    if norm not in ("l2", "linf", "l0"):
        raise AdvlabError(f"unknown norm {norm!r}; choose l2, linf or l0")
    result = attack_dataset(attack, model, x, y, batch_size=batch_size, device=device, progress=progress)
    return MinimalNormEvaluation.from_result(result, norm)
