"""An attack over a whole data set: the one batched loop behind `advlab attack`, the minimal-norm
curves (advlab.evaluation.robust.minimal_norms) and the Python API.

    result = attack_dataset(PGD(eps=0.3), model, x, y, batch_size=250)
    result.summary()  # success, robust and clean accuracy, median norms, cost (AttackResult.summary)
"""

from __future__ import annotations

import torch
from torch import nn
from tqdm import tqdm

from advlab.attacks.base import Attack, AttackResult, Cost
from advlab.errors import AdvlabError
from advlab.runtime import BatchSize, as_batch_size


def concat_results(results: list[AttackResult]) -> AttackResult:
    """One AttackResult (on the CPU) from the results of consecutive batches; costs are summed."""
    if not results:
        raise AdvlabError("no batches were attacked (an empty data set?)")
    cost = Cost(sum(r.cost.forward for r in results), sum(r.cost.backward for r in results),
                sum(r.cost.queries for r in results))

    def cat(name: str) -> torch.Tensor:
        return torch.cat([getattr(r, name).cpu() for r in results])

    targets = [r.target for r in results]
    return AttackResult(adv=cat("adv"), success=cat("success"),
                        norms={k: torch.cat([r.norms[k].cpu() for r in results]) for k in results[0].norms},
                        cost=cost, clean_pred=cat("clean_pred"), adv_pred=cat("adv_pred"), labels=cat("labels"),
                        target=None if any(t is None for t in targets) else torch.cat([t.cpu() for t in targets]))


def attack_dataset(attack: Attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                   target: torch.Tensor | None = None, batch_size: int | BatchSize = 256,
                   device: torch.device | str = "cpu",
                   progress: bool = True) -> AttackResult:
    """Attack (x, y) (optionally towards `target`) in batches of batch_size on device; the per-sample
    results of all batches as one AttackResult on the CPU, with the summed cost. A batch that runs
    out of memory is retried at half the size, and the rest of the run keeps that size
    (advlab.runtime.BatchSize: pass one to share it with the run's other loops); the run says so."""
    if int(batch_size) < 1:
        raise AdvlabError(f"batch_size must be positive, got {int(batch_size)}")
    batch = as_batch_size(batch_size)
    device = torch.device(device)
    bar = tqdm(total=len(x), desc=attack.name, disable=not progress, leave=False, unit="image")

    def one(s: slice) -> AttackResult:
        result = attack(model, x[s].to(device), y[s].to(device), None if target is None else target[s].to(device))
        bar.update(s.stop - s.start)
        return result

    try:
        results = batch.map(one, len(x))
    finally:
        bar.close()
    return concat_results(results)


def target_class(spec: str | int, classes: list[str]) -> int:
    """A class given by name or index; anything else is a user error naming the choices."""
    if spec in classes:
        return classes.index(spec)
    try:
        k = int(spec)
    except ValueError:
        raise AdvlabError(f"unknown target class {spec!r}; choose an index 0..{len(classes) - 1} or one of "
                          f"{', '.join(classes)}") from None
    if not 0 <= k < len(classes):
        raise AdvlabError(f"target class {k} out of range 0..{len(classes) - 1}")
    return k


def choose_targets(x: torch.Tensor, y: torch.Tensor, classes: list[str], spec: str | int | None = None,
                   seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x, y, target) of a targeted attack: one class for all (images already of it are dropped: they
    have nothing to reach), or, with spec None, a random class other than the true one per image."""
    if spec is not None:
        k = target_class(spec, list(classes))
        keep = y != k
        return x[keep], y[keep], torch.full_like(y[keep], k)
    shift = torch.randint(1, len(classes), (len(y),), generator=torch.Generator().manual_seed(seed))
    return x, y, (y + shift) % len(classes)
