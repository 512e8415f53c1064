"""The ensemble evaluation of Croce & Hein (2020, "Reliable evaluation of adversarial robustness with
an ensemble of diverse parameter-free attacks", sec. 4), run so that no gradient is spent twice.

Suites:
- ``standard``: APGD-CE, then APGD-T, FAB-T, Square (5,000 queries), each only on the samples every
  earlier attack left correctly classified; a sample counts as robust only if all failed (the
  per-sample worst case). Two schedules (SuiteConfig): ``autoattack``, the authors' budget (APGD-T and
  FAB-T toward 9 target classes, FAB-T on every remaining sample), and ``fast``, advlab's default:
  APGD-T toward the 5 classes ranked highest where APGD-CE ended, each from its own random start, and
  no FAB-T (``fab="unconverged"`` runs it only where APGD-T did not converge, ``"all"`` everywhere). On a
  robust image the authors' schedule spends about 1,900 gradient calls and the fast one about 600;
  docs/evaluation.md measures both against the official AutoAttack.
- ``rand``: for models whose forward pass is random: APGD-CE with the gradient averaged over 8 draws
  (EOT); a sample leaves only after its averaged logits were misclassified on 10 steps in a row, and the
  verdict on each returned point is the logits averaged over 20 fresh forward passes (docs/evaluation-rand.md
  measures this against AutoAttack's rand version; the ``autoattack`` schedule runs the authors' APGD-CE and
  APGD-DLR with 20 draws, under the same confirmation and verdict). A model found to be randomized gets this
  suite even when ``standard`` is asked for.

Where the gradients go (docs/evaluation.md measures it): the members run in order of cost-effectiveness
and each sample leaves every attack the moment it is misclassified (the authors' code keeps iterating on
broken samples until the run ends); the targets of APGD-T are ranked where APGD-CE ended (fast) or by
the clean logits (autoattack, and FAB-T always) and each next target runs only on the samples still
unbroken; the fast schedule stops after 5 targets and leaves FAB-T out. With several eps (ascending) a sample
broken at a smaller eps counts as broken at every larger one (the balls are nested), so each eps only
attacks the survivors of the previous one.

Per sample the evaluation keeps which attack broke it, at which eps, at which step (iteration, or query
for Square), the gradient calls and queries spent on it, and the norm of its adversarial perturbation.
The random starts are drawn per sample (seeded; APGD-T's further targets from the sample's pixels), so a
sample's attack does not depend on which other samples share its batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm import tqdm

from advlab.attacks import FGSM
from advlab.attacks.apgd import APGD, APGDTargeted, is_randomized
from advlab.attacks.base import Cost, ThreatModel, check_norm
from advlab.attacks.blackbox.oracle import LocalOracle
from advlab.attacks.blackbox.square import Square
from advlab.attacks.fab import FAB
from advlab.errors import AdvlabError
from advlab.evaluation.defense import Diagnostic, check_gradients, check_unbounded
from advlab.runtime import BatchSize, as_batch_size, eval_mode

SUITES = ("classic", "standard", "rand")
MEMBERS = {
    "standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
    "rand": ("apgd-ce", "apgd-dlr"),
}
DISPLAY = {"apgd-ce": "APGD-CE", "apgd-dlr": "APGD-DLR", "apgd-t": "APGD-T", "fab-t": "FAB-T", "square": "Square"}


FAB_MODES = ("off", "unconverged", "all")
SCHEDULES = ("fast", "autoattack")
RANKINGS = ("apgd-ce", "clean")  # APGD-T's targets: by the logits where APGD-CE ended, or at the clean image


@dataclass
class SuiteConfig:
    """The protocol's settings. The default is advlab's fast schedule (docs/evaluation.md measures it
    against the official AutoAttack): APGD-T toward 5 targets ranked by the logits where APGD-CE ended
    (rank_targets "apgd-ce"; "clean": by the clean logits) and no FAB-T (the evidence for both is there).
    ``autoattack()`` gives the authors' budget: 9 targets by the clean logits for APGD-T and FAB-T, FAB-T
    on every sample APGD-T left.

    fab: "off" (never), "unconverged" (only on the samples APGD-T did not converge on: at its last
    checkpoint neither of APGD's step-halving conditions held; everywhere when APGD-T did not run) or
    "all".

    The rand suite (a randomized model): rand_members with EOT over `eot` draws per step; a sample leaves an
    APGD run once its averaged logits were misclassified on `confirm` steps in a row (one noisy crossing is
    not a verdict); each returned point is judged by the logits averaged over `verdict_draws` fresh forward
    passes (0: one pass)."""

    steps: int = 100
    targets: int = 5
    fab: str = "off"
    square_queries: int = 5000
    square_p_init: float = 0.8
    eot: int = 8
    seed: int = 0
    rank_targets: str = "apgd-ce"
    # rand suite: steps in a row whose averaged logits must be misclassified before a sample leaves APGD early
    confirm: int = 10
    # rand suite: fresh forward passes (no gradient) that judge each returned point; 0: one pass
    verdict_draws: int = 20
    rand_members: tuple[str, ...] = ("apgd-ce",)
    # rand suite with keep_adversarial: keep the most damaging point (largest share of the verdict's draws
    # misclassifying it) also for a sample that stays robust, instead of its clean image: a randomized model
    # misclassifies it with that probability, which the expected accuracy over draws counts
    keep_best_point: bool = True

    def __post_init__(self) -> None:
        if self.fab not in FAB_MODES:
            raise AdvlabError(f"unknown FAB-T mode {self.fab!r}; choose one of {', '.join(FAB_MODES)}")
        if self.rank_targets not in RANKINGS:
            raise AdvlabError(f"unknown target ranking {self.rank_targets!r}; choose one of {', '.join(RANKINGS)}")
        self.rand_members = tuple(self.rand_members)
        if not self.rand_members or any(m not in MEMBERS["rand"] for m in self.rand_members):
            raise AdvlabError(f"rand suite members must be among {', '.join(MEMBERS['rand'])}, got "
                              f"{list(self.rand_members)}")
        if isinstance(self.verdict_draws, bool) or not isinstance(self.verdict_draws, int) or self.verdict_draws < 0:
            raise AdvlabError(f"verdict_draws must be 0 or a positive integer, got {self.verdict_draws!r}")

    @classmethod
    def autoattack(cls, **overrides) -> SuiteConfig:
        """The budget of the authors' standard version: 9 targets ranked by the clean logits, FAB-T on every
        remaining sample; for the rand suite, their rand version's APGD-CE and APGD-DLR with 20 draws."""
        return cls(**{"targets": 9, "fab": "all", "rank_targets": "clean", "eot": 20,
                      "rand_members": ("apgd-ce", "apgd-dlr"), **overrides})

    @classmethod
    def schedule(cls, name: str, **overrides) -> SuiteConfig:
        """"fast" (advlab's default) or "autoattack" (the authors' budget); overrides replace settings."""
        if name not in SCHEDULES:
            raise AdvlabError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
        overrides = {k: v for k, v in overrides.items() if v is not None}
        return cls.autoattack(**overrides) if name == "autoattack" else cls(**overrides)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


def check_classifier(model: nn.Module, x: torch.Tensor, num_classes: int, device) -> None:
    """A classifier maps a batch to (batch, num_classes) finite logits; anything else is refused."""
    try:
        with eval_mode(model), torch.no_grad():
            out = model(x[:2].to(device))
    except Exception as exc:  # noqa: BLE001 (a model that cannot run on the data is the user's input)
        raise AdvlabError(f"the model does not run on these images ({type(exc).__name__}: {exc}); "
                          "pass a classifier checkpoint trained on this data set") from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] != num_classes:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise AdvlabError(f"the model is not a classifier of {num_classes} classes (its output has shape {shape}); "
                          "pass a classifier checkpoint")


@dataclass
class SuiteEvaluation:
    """Robust accuracy per eps under the ensemble, per member, and per sample."""

    suite: str
    norm: str
    eps: list[float]
    n: int
    clean_correct: torch.Tensor
    broken_eps: torch.Tensor  # smallest eps that broke the sample (0: misclassified clean, inf: robust)
    broken_by: list[str]  # the attack that broke it ("clean": misclassified to begin with, "": robust)
    step: torch.Tensor  # iteration (queries for Square) at which it broke, -1 if robust
    gradient_calls: torch.Tensor  # forward+backward passes spent on the sample, all attacks and eps
    queries: torch.Tensor  # forward-only queries spent on it (Square)
    adv_norm: torch.Tensor  # norm of its adversarial perturbation (inf if robust)
    members: list[str]
    accuracy_after: dict[str, list[float]]  # member -> robust accuracy per eps after it ran
    cost: dict[str, Cost]
    config: SuiteConfig
    randomized: bool = False
    notes: list[str] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    target_rank: torch.Tensor | None = None  # APGD-T / FAB-T: rank of the target that broke it (1: most likely)
    fab_attacked: int = 0  # samples FAB-T ran on (with fab="unconverged", those APGD-T did not converge on)
    # with keep_adversarial: the image that broke each sample, the clean image where none did (as AutoAttack returns;
    # the rand suite with keep_best_point: the most damaging point found instead of the clean image)
    adversarial: torch.Tensor | None = None

    @property
    def clean_accuracy(self) -> float:
        return self.clean_correct.float().mean().item()

    def robust_accuracy(self) -> list[float]:
        return [(self.broken_eps > e).float().mean().item() for e in self.eps]

    def worst_case(self) -> list[float]:
        return self.robust_accuracy()

    @property
    def masking_suspected(self) -> bool:
        return any(d.fired for d in self.diagnostics)

    def per_sample(self) -> list[dict]:
        """One record per sample, in data order (saved as samples.json in the run folder)."""
        rows = []
        for i in range(self.n):
            e = float(self.broken_eps[i])
            rows.append({"index": i, "clean_correct": bool(self.clean_correct[i]),
                         "broken_by": self.broken_by[i], "broken_at_eps": e if math.isfinite(e) else None,
                         "step": int(self.step[i]), "gradient_calls": int(self.gradient_calls[i]),
                         "queries": int(self.queries[i]),
                         "target_rank": int(self.target_rank[i]) if self.target_rank is not None else 0,
                         "adv_norm": float(self.adv_norm[i]) if math.isfinite(float(self.adv_norm[i])) else None})
        return rows

    def broken_by_target_rank(self) -> dict[str, dict[int, int]]:
        """{APGD-T / FAB-T: {rank of the target: samples broken}}: how much each further target adds."""
        out: dict[str, dict[int, int]] = {}
        if self.target_rank is None:
            return out
        for i, by in enumerate(self.broken_by):
            if by in ("APGD-T", "FAB-T"):
                rank = int(self.target_rank[i])
                out.setdefault(by, {})[rank] = out.setdefault(by, {}).get(rank, 0) + 1
        return out

    def to_dict(self) -> dict:
        total = Cost()
        for c in self.cost.values():
            total.forward, total.backward, total.queries = (total.forward + c.forward, total.backward + c.backward,
                                                            total.queries + c.queries)
        return {"suite": self.suite, "norm": self.norm, "eps": self.eps, "n": self.n,
                "clean_accuracy": self.clean_accuracy, "robust_accuracy": self.robust_accuracy(),
                "worst_case": self.worst_case(), "members": self.members, "accuracy_after": self.accuracy_after,
                "cost": {k: c.to_dict() for k, c in self.cost.items()}, "total_cost": total.to_dict(),
                "gradient_calls_per_image": total.backward / max(self.n, 1),
                "broken_by_count": {m: self.broken_by.count(m) for m in self.members},
                "broken_by_target_rank": self.broken_by_target_rank(), "fab_attacked": self.fab_attacked,
                "config": self.config.to_dict(), "randomized": self.randomized, "notes": self.notes,
                "masking_suspected": self.masking_suspected, "diagnostics": [d.to_dict() for d in self.diagnostics]}


    def to_record(self) -> dict:
        """to_dict() plus the per-sample records: enough to rebuild the evaluation (an evaluations record of
        advlab.evaluation.records, read back by from_record)."""
        return {**self.to_dict(), "samples": self.per_sample()}

    @classmethod
    def from_record(cls, d: dict) -> SuiteEvaluation:
        """The evaluation to_record() stored."""
        rows = d["samples"]
        inf = math.inf

        def column(key, default, dtype):
            return torch.tensor([default if r[key] is None else r[key] for r in rows], dtype=dtype)

        return cls(d["suite"], d["norm"], list(d["eps"]), d["n"],
                   torch.tensor([r["clean_correct"] for r in rows], dtype=torch.bool),
                   column("broken_at_eps", inf, torch.float64), [r["broken_by"] for r in rows],
                   column("step", -1, torch.long), column("gradient_calls", 0, torch.long),
                   column("queries", 0, torch.long), column("adv_norm", inf, torch.float32), list(d["members"]),
                   {k: list(v) for k, v in d["accuracy_after"].items()},
                   {k: Cost(**c) for k, c in d["cost"].items()}, SuiteConfig(**d["config"]), d["randomized"],
                   list(d["notes"]), [Diagnostic(**x) for x in d["diagnostics"]],
                   target_rank=column("target_rank", 0, torch.long), fab_attacked=d.get("fab_attacked", 0))


def _build(member: str, eps: float, norm: str, cfg: SuiteConfig, eot: int):
    confirm = cfg.confirm if eot > 1 else 1
    if member == "apgd-ce":
        return APGD(eps=eps, norm=norm, steps=cfg.steps, loss="ce", eot=eot, seed=cfg.seed, confirm=confirm)
    if member == "apgd-dlr":
        return APGD(eps=eps, norm=norm, steps=cfg.steps, loss="dlr", eot=eot, seed=cfg.seed, confirm=confirm)
    if member == "apgd-t":
        return APGDTargeted(eps=eps, norm=norm, steps=cfg.steps, targets=cfg.targets, seed=cfg.seed)
    if member == "fab-t":
        return FAB(norm=norm, eps=eps, steps=cfg.steps, targets=cfg.targets, seed=cfg.seed)
    if member == "square":
        return Square(eps=eps, norm=norm, max_queries=cfg.square_queries, p_init=cfg.square_p_init, seed=cfg.seed)
    raise AdvlabError(f"unknown suite member {member!r}; choose from {', '.join(DISPLAY)}")


def averaged_logits(model: nn.Module, x: torch.Tensor, draws: int) -> torch.Tensor:
    """The logits averaged over `draws` forward passes (of a randomized model: fresh draws)."""
    return fresh_draws(model, x, None, draws)[0]


def fresh_draws(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, draws: int
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The logits averaged over `draws` forward passes and, with labels y, the share of the passes that
    misclassify each sample (its estimated probability of being misclassified by one draw)."""
    total, wrong = None, None
    for _ in range(draws):
        logits = model(x)
        total = logits if total is None else total + logits
        if y is not None:
            miss = (logits.argmax(1) != y).float()
            wrong = miss if wrong is None else wrong + miss
    return total / draws, None if wrong is None else wrong / draws


def run_suite(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: Sequence[float], norm: str = "linf",
              suite: str = "standard", members: Sequence[str] | None = None, config: SuiteConfig | None = None,
              batch_size: int | BatchSize = 500, device: torch.device | str = "cpu", progress: bool = True,
              diagnostics: bool = True, unbounded_n: int = 200, keep_adversarial: bool = False) -> SuiteEvaluation:
    """The ensemble `suite` ("standard" or "rand") at each eps; members overrides the list of attacks
    (a subset, in order, e.g. to run one member alone on the same samples). keep_adversarial keeps the
    image that broke each sample (at the smallest eps that broke it) in ``adversarial`` (the rand suite with
    ``config.keep_best_point``: for a sample that stays robust, the point most fresh draws misclassified)."""
    if suite not in MEMBERS:
        raise AdvlabError(f"unknown suite {suite!r}; choose one of {', '.join(SUITES)}")
    cfg = config or SuiteConfig()
    check_norm(norm)
    eps_sorted = sorted(float(e) for e in eps)
    top = 1.0 if norm == "linf" else math.sqrt(x[0].numel())
    if not eps_sorted or eps_sorted[0] <= 0 or eps_sorted[-1] > top:
        raise AdvlabError(f"eps must be positive and at most {top:g} for {norm}, got {list(eps)}")
    device = torch.device(device)
    notes = []
    randomized = is_randomized(model, x[:8].to(device))
    if randomized and suite == "standard":
        suite = "rand"
        notes.append("the model's forward pass is random (two passes on the same images differ): the rand suite "
                     f"({' and '.join(DISPLAY[m] for m in cfg.rand_members)} with EOT over {cfg.eot} draws) "
                     "replaces the standard one")
    if members is None:
        members = cfg.rand_members if suite == "rand" else MEMBERS[suite]
    members = list(members)
    eot = cfg.eot if suite == "rand" else 1
    # a randomized model is judged by the logits averaged over fresh draws (clean and attacked alike), not by
    # one draw: one draw's verdict is itself random, and the first point whose noisy estimate crossed the
    # boundary is often classified right again by the next draws
    draws = cfg.verdict_draws if suite == "rand" and randomized and cfg.verdict_draws > 0 else 1
    if draws > 1:
        notes.append(f"verdict: the logits averaged over {draws} fresh draws of the model at each returned point")
    n = len(x)
    model.eval()
    batch = as_batch_size(batch_size)  # halves on out-of-memory, shared by every loop of the run
    with torch.no_grad():
        clean_logits = batch.cat(lambda s: averaged_logits(model, x[s].to(device), draws).cpu(), n)
    correct = clean_logits.argmax(1) == y.cpu()
    broken_eps = torch.where(correct, math.inf, 0.0).double()
    broken_by = ["" if c else "clean" for c in correct.tolist()]
    step = torch.where(correct, -1, 0).long()
    grads = torch.zeros(n, dtype=torch.long)
    queries = torch.zeros(n, dtype=torch.long)
    adv_norm = torch.where(correct, torch.full((n,), math.inf), torch.zeros(n))
    ranks = torch.zeros(n, dtype=torch.long)
    fab_attacked = 0
    adversarial = x.detach().cpu().clone() if keep_adversarial else None
    # the logits at the point where APGD-CE left each sample it did not break: APGD-T ranks its targets by
    # them (rank_targets "apgd-ce"); the clean logits where APGD-CE did not run
    rank_logits = clean_logits.clone()
    best_share = torch.zeros(n)  # rand suite: share of fresh draws that misclassify the point kept
    costs = {m: Cost() for m in members}
    after: dict[str, list[float]] = {m: [] for m in members}
    generator = torch.Generator().manual_seed(cfg.seed)
    gray = torch.full_like(x[:1], 0.5).expand_as(x).contiguous()
    unit_starts = ThreatModel(norm, 0.5).random_start(gray, generator) - 0.5
    for e in eps_sorted:
        # the same per-sample random direction at every eps, scaled to the ball (a box-clipped start)
        starts = (x + unit_starts * (2 * e)).clamp(0.0, 1.0)
        unconverged = torch.ones(n, dtype=torch.bool)  # APGD-T's verdict at this eps (all, if it did not run)
        for member in members:
            attack = _build(member, e, norm, cfg, eot)
            standing = broken_eps > e
            if member == "fab-t":
                if cfg.fab == "off":
                    after[member].append(standing.float().mean().item())
                    continue
                if cfg.fab == "unconverged":
                    standing &= unconverged
                fab_attacked += int(standing.sum())
            todo = standing.nonzero().squeeze(1)
            bar = tqdm(total=len(todo), desc=f"{DISPLAY[member]} eps {e:g}", disable=not progress, leave=False,
                       unit="image")

            def one(s: slice, todo=todo, member=member, attack=attack, e=e, starts=starts, unconverged=unconverged,
                    bar=bar) -> None:
                idx = todo[s]
                xb, yb = x[idx].to(device), y[idx].to(device)
                if member == "square":
                    result = attack(LocalOracle(model), xb, yb)
                    at = result.extra["queries_at_success"].cpu()
                    used_q = result.extra["queries"].cpu()
                    costs[member].queries += result.cost.queries
                    queries[idx] += used_q
                else:
                    extra = {"start": starts[idx].to(device)} if member.startswith("apgd") else {}
                    if member == "apgd-t" and cfg.rank_targets == "apgd-ce":
                        extra["rank_logits"] = rank_logits[idx].to(device)
                    result = attack(model, xb, yb, clean_logits=clean_logits[idx].to(device), **extra)
                    at = result.extra["broke_at_step"].cpu()
                    grads[idx] += result.extra["gradient_calls"].cpu()  # EOT draws included
                    if member == "apgd-t":
                        unconverged[idx] = result.extra["rising"].cpu()
                    costs[member].forward += result.cost.forward
                    costs[member].backward += result.cost.backward
                if draws > 1:
                    with torch.no_grad():
                        mean_logits, share = fresh_draws(model, result.adv, result.labels, draws)
                    hit, share = (mean_logits.argmax(1) != result.labels).cpu(), share.cpu()
                    costs[member].forward += len(idx) * draws
                    if adversarial is not None and cfg.keep_best_point:
                        # where the averaged logits stay right, the point that most draws misclassify is still
                        # the attack's best: kept (a later member's point replaces it only if more damaging)
                        gain = ~hit & (share > best_share[idx])
                        adversarial[idx[gain]] = result.adv.detach().cpu()[gain]
                        best_share[idx[gain]] = share[gain]
                else:
                    hit = (result.adv_pred != result.labels).cpu()
                if member == "apgd-ce" and "apgd-t" in members and cfg.rank_targets == "apgd-ce" and not hit.all():
                    with torch.no_grad():
                        rank_logits[idx[~hit]] = model(result.adv[~hit.to(result.adv.device)]).float().cpu()
                    costs[member].forward += int((~hit).sum())
                size = result.norms[norm].cpu()
                rows = idx[hit]
                broken_eps[rows] = e
                step[rows] = at[hit]
                if "target_rank" in result.extra:
                    ranks[rows] = result.extra["target_rank"].cpu()[hit].long()
                adv_norm[rows] = size[hit]
                if adversarial is not None:
                    adversarial[rows] = result.adv.detach().cpu()[hit]
                for r in rows.tolist():
                    broken_by[r] = DISPLAY[member]
                bar.update(len(idx))

            batch.map(one, len(todo))
            bar.close()
            after[member].append((broken_eps > e).float().mean().item())
    ev = SuiteEvaluation(suite, norm, eps_sorted, n, correct, broken_eps, broken_by, step, grads, queries, adv_norm,
                         [DISPLAY[m] for m in members], {DISPLAY[m]: v for m, v in after.items()},
                         {DISPLAY[m]: c for m, c in costs.items()}, cfg, randomized, notes,
                         target_rank=ranks, fab_attacked=fab_attacked, adversarial=adversarial)
    if diagnostics:
        ev.diagnostics = suite_diagnostics(model, x, y, ev, batch, device, unbounded_n)
    return ev


def suite_diagnostics(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ev: SuiteEvaluation,
                      batch_size: int | BatchSize, device, unbounded_n: int = 200, tolerance: float = 0.01
                      ) -> list[Diagnostic]:
    """The gradient-masking checks with an ensemble: the gradient statistics and the unbounded attack of
    advlab.evaluation.defense, single step against the first iterative member at the largest eps, and
    whether a later member (above all the gradient-free Square) broke what the first member left."""
    top = max(ev.eps)
    batch_size = as_batch_size(batch_size)
    out = [check_gradients(model, x, y, batch_size=batch_size, device=device)]
    if unbounded_n:
        out.append(check_unbounded(model, x[:unbounded_n], y[:unbounded_n], batch_size=batch_size, device=device))
    first = ev.members[0]
    first_acc = ev.accuracy_after[first][-1]
    todo = ev.clean_correct.nonzero().squeeze(1)
    fgsm = FGSM(eps=top, norm=ev.norm)

    def one(s: slice) -> int:
        r = fgsm(model, x[todo[s]].to(device), y[todo[s]].to(device))
        return int((r.adv_pred != r.labels).sum())

    fgsm_broken = sum(batch_size.map(one, len(todo)))
    fgsm_acc = (len(todo) - fgsm_broken) / ev.n
    gap = fgsm_acc - first_acc
    fired = fgsm_acc < first_acc - tolerance
    out.append(Diagnostic(
        "single-step stronger than iterative", fired,
        (f"FGSM leaves {fgsm_acc:.1%} at eps {top:g}, {first} {first_acc:.1%}: the one-step attack is the stronger, "
         "so the iterative attack is not following a useful gradient; rerun with more EOT draws or check for "
         "masking." if fired else
         f"FGSM leaves {fgsm_acc:.1%} at eps {top:g} and {first} {first_acc:.1%} (gap {gap:.1%})."),
        {"fgsm_accuracy": fgsm_acc, f"{first}_accuracy": first_acc, "eps": top, "tolerance": tolerance}))
    final = ev.robust_accuracy()[-1]
    overstated = first_acc - final
    fired = overstated > tolerance
    out.append(Diagnostic(
        "stronger attack breaks what a weaker left", fired,
        (f"{first} alone would have overstated robustness by {overstated:.1%} points at eps {top:g} "
         f"({first_acc:.1%} against the ensemble's {final:.1%}); breaks per attack: "
         + ", ".join(f"{m} {ev.broken_by.count(m)}" for m in ev.members) + "." if fired else
         f"The ensemble adds at most {overstated:.1%} to {first} alone at eps {top:g}."),
        {"first_member_accuracy": first_acc, "ensemble_accuracy": final, "tolerance": tolerance}))
    if "Square" in ev.members:
        only_square = ev.broken_by.count("Square") / ev.n
        fired = only_square > tolerance
        out.append(Diagnostic(
            "black-box stronger than white-box", fired,
            (f"Square Attack (no gradients) breaks {only_square:.1%} of samples that every gradient attack left: "
             "the gradients are masked; trust the black-box figure and try EOT or BPDA." if fired else
             f"Square Attack breaks {only_square:.1%} of samples the gradient attacks left."),
            {"broken_only_by_square": only_square, "tolerance": tolerance}))
    return out


def compare_runs(a: list[dict], b: list[dict]) -> dict:
    """Samples that one evaluation broke and the other did not (per-sample records of two runs on the
    same images, as saved in samples.json)."""
    if len(a) != len(b):
        raise AdvlabError(f"the two runs evaluated different numbers of samples ({len(a)} and {len(b)}); compare "
                          "runs on the same images")
    only_a, only_b = [], []
    for ra, rb in zip(a, b, strict=True):
        ba, bb = ra["broken_by"] not in ("", "clean"), rb["broken_by"] not in ("", "clean")
        if ba and not bb and rb["broken_by"] != "clean":
            only_a.append(ra["index"])
        if bb and not ba and ra["broken_by"] != "clean":
            only_b.append(rb["index"])
    return {"only_a": only_a, "only_b": only_b, "n": len(a)}
