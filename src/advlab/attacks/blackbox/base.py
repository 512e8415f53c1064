"""What every black-box attack shares: input checks, per-image query accounting, best-so-far results.

A black-box attack is configured once and called on an oracle: ``Square(eps=0.3)(oracle, x, y)``.
It sees nothing but ``oracle.query``. :class:`QueryRun` sits between the attack and the oracle:

- it counts queries per image and refuses (as a bug) any query past the attack's per-image limit;
- it keeps, per image, the best point queried so far inside the threat model (lowest margin for
  score-based attacks), and records success the moment the oracle's answer for such a point is
  adversarial, with the number of queries that image had used by then;
- when the oracle's budget runs out (BudgetExhausted), the attack stops and the result holds the
  best points so far. Success is read from the oracle's own answers, never from the attack's claim.
"""

from __future__ import annotations

import torch

from advlab.attacks.base import AttackResult, Cost, ThreatModel, perturbation_norms
from advlab.attacks.blackbox.oracle import BudgetExhausted, Oracle
from advlab.attacks.common import check_positive_int
from advlab.errors import AdvlabError, check_images, check_labels

TINY = 1e-300  # floor for probabilities before the log (float64 answers)


def margin_loss(probs: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Per-sample margin on log-probabilities, negative exactly when the attack's goal is met.

    Untargeted: log p_y - max_{j != y} log p_j; targeted: max_{j != t} log p_j - log p_t. On a
    softmax these equal the logit margins (the loss of Andriushchenko et al. 2020 and of ZOO).
    """
    logp = probs.clamp_min(TINY).log()
    cls = y if target is None else target
    own = logp.gather(1, cls[:, None]).squeeze(1)
    others = logp.scatter(1, cls[:, None], float("-inf")).amax(1)
    return own - others if target is None else others - own


class QueryRun:
    """Per-image bookkeeping of one black-box attack run on a batch (see the module docstring)."""

    def __init__(self, oracle: Oracle, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                 norm: str, eps: float, max_queries: int) -> None:
        self.oracle, self.x, self.y, self.target = oracle, x, y, target
        self.norm, self.eps, self.max_queries = norm, eps, max_queries
        n = x.shape[0]
        self.n = n
        self.queries = torch.zeros(n, dtype=torch.long)
        self.adv = x.clone()
        self.adv_pred = torch.full((n,), -1, dtype=torch.long)
        self.best_loss = torch.full((n,), float("inf"), dtype=torch.float64)
        self.success = torch.zeros(n, dtype=torch.bool)
        self.queries_at_success = torch.full((n,), -1, dtype=torch.long)
        self.clean_pred = torch.full((n,), -1, dtype=torch.long)
        self.budget_exhausted = False
        self.extra: dict = {}  # attack-specific per-image figures for the result

    def left(self) -> torch.Tensor:
        """Queries each image may still use under the attack's per-image limit."""
        return self.max_queries - self.queries

    def active(self, needed: int = 1) -> torch.Tensor:
        """Indices of images not yet broken that can still afford `needed` queries."""
        return torch.nonzero(~self.success & (self.left() >= needed)).flatten()

    def within_threat(self, xs: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        delta = (xs - self.x[idx]).flatten(1)
        size = delta.abs().amax(1) if self.norm == "linf" else delta.norm(dim=1)
        return size <= self.eps * (1 + 1e-6) + 1e-7

    def query(self, xs: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Ask the oracle about xs (row k perturbs image idx[k]); returns (labels, margins or None)."""
        idx = idx.to(torch.long).cpu()
        counts = torch.bincount(idx, minlength=self.n)
        if bool((self.queries + counts > self.max_queries).any()):
            raise RuntimeError("black-box attack asked for more queries than its per-image limit")
        out = self.oracle.query(xs).cpu()
        self.queries += counts
        if self.oracle.labels_only:
            labels, margins = out, None
        else:
            labels = out.argmax(1)
            margins = margin_loss(out, self.y[idx].cpu(), None if self.target is None else self.target[idx].cpu())
        self._record(xs.detach(), idx, labels, margins)
        return labels, margins

    def _record(self, xs: torch.Tensor, idx: torch.Tensor, labels: torch.Tensor,
                margins: torch.Tensor | None) -> None:
        cls = (self.y if self.target is None else self.target)[idx].cpu()
        goal = labels != cls if self.target is None else labels == cls
        inside = self.within_threat(xs, idx.to(xs.device)).cpu() & ~self.success[idx]
        # one Python step per image (not per row): the first adversarial row of each image wins
        for k in self._first_rows(idx, inside & goal):
            i = int(idx[k])
            self.success[i] = True
            self.queries_at_success[i] = self.queries[i]
            self.adv[i], self.adv_pred[i] = xs[k], labels[k]
            if margins is not None:
                self.best_loss[i] = margins[k]
        inside &= ~self.success[idx]
        if margins is not None and inside.any():
            masked = torch.where(inside, margins, torch.full_like(margins, float("inf")))
            lowest = torch.full((self.n,), float("inf"), dtype=margins.dtype).scatter_reduce(
                0, idx, masked, reduce="amin")
            better = inside & (masked == lowest[idx]) & (masked < self.best_loss[idx])
            for k in self._first_rows(idx, better):
                i = int(idx[k])
                self.best_loss[i] = margins[k]
                self.adv[i], self.adv_pred[i] = xs[k], labels[k]

    @staticmethod
    def _first_rows(idx: torch.Tensor, mask: torch.Tensor) -> list[int]:
        rows = torch.nonzero(mask).flatten().tolist()
        seen, first = set(), []
        for k in rows:
            i = int(idx[k])
            if i not in seen:
                seen.add(i)
                first.append(k)
        return first

    def start(self) -> None:
        """Query the clean images (one query each); misclassified ones count as broken at once."""
        labels, _ = self.query(self.x, torch.arange(self.n))
        self.clean_pred = labels.clone()

    def result(self, name: str) -> AttackResult:
        adv_pred = torch.where(self.adv_pred >= 0, self.adv_pred, self.clean_pred)
        cost = Cost(queries=int(self.queries.sum()))
        dev = self.x.device
        extra = {"queries": self.queries.clone(), "queries_at_success": self.queries_at_success.clone(),
                 "budget_exhausted": self.budget_exhausted, "max_queries": self.max_queries, "attack": name,
                 **self.extra}
        return AttackResult(self.adv.detach(), self.success.to(dev), perturbation_norms(self.adv, self.x), cost,
                            self.clean_pred.to(dev), adv_pred.to(dev), self.y, self.target, extra)


class BlackBoxAttack:
    """Base: subclasses implement ``run(state: QueryRun, generator)`` and set ``needs_scores``.

    Called as ``attack(oracle, x, y, target=None) -> AttackResult`` with ``cost.queries`` filled and
    per-image counts in ``result.extra["queries"]`` / ``["queries_at_success"]`` (-1: not broken).
    """

    name = "blackbox"
    needs_scores = True

    def __init__(self, eps: float, norm: str = "linf", max_queries: int = 10_000, seed: int = 0) -> None:
        self.threat = ThreatModel(norm, eps)
        self.norm, self.eps = self.threat.norm, self.threat.eps
        if self.eps == 0:
            raise AdvlabError("eps must be positive for a black-box attack")
        self.max_queries = check_positive_int(max_queries, "max_queries")
        self.seed = int(seed)

    def __call__(self, oracle: Oracle, x: torch.Tensor, y: torch.Tensor,
                 target: torch.Tensor | int | None = None) -> AttackResult:
        if not isinstance(oracle, Oracle):
            raise AdvlabError(f"black-box attacks take an Oracle (LocalOracle(model) or HttpOracle(url)), got "
                              f"{type(oracle).__name__}; for a model, use LocalOracle(model)")
        check_images(x)
        oracle.check_input(x, "images")
        if self.needs_scores and oracle.labels_only:
            raise AdvlabError(f"{self.name} needs probabilities but the oracle returns labels only; use "
                              "hopskipjump (decision-based) or a score-returning oracle")
        check_labels(y, x.shape[0], oracle.num_classes or None)
        y = y.to(x.device)
        if target is not None:
            if isinstance(target, int):
                target = torch.full_like(y, target)
            check_labels(target, x.shape[0], oracle.num_classes or None, name="target classes")
            target = target.to(x.device)
        if self.max_queries < 2:
            raise AdvlabError("max_queries must be at least 2 (the clean query and one attempt)")
        state = QueryRun(oracle, x.detach(), y, target, self.norm, self.eps, self.max_queries)
        generator = torch.Generator().manual_seed(self.seed)
        try:
            state.start()
            self.run(state, generator)
        except BudgetExhausted:
            state.budget_exhausted = True
        return state.result(self.name)

    def run(self, state: QueryRun, generator: torch.Generator) -> None:
        raise NotImplementedError


def success_within(result: AttackResult, budget: int) -> torch.Tensor:
    """Per image: broken with at most `budget` queries (from result.extra['queries_at_success'])."""
    at = result.extra["queries_at_success"]
    return (at >= 0) & (at <= budget)
