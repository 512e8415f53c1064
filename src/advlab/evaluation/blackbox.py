"""Black-box runs over a data set: attacks that see only an oracle, in batches, with their query
statistics; the white-box reference; substitute training (Papernot et al. 2017) with its final
transfer attack. `advlab blackbox`, `advlab attack --oracle` and `advlab substitute` are these calls.

    settings = BlackboxSettings(attacks=("square",), eps=0.3, queries=1000)
    run = run_blackbox(LocalOracle(model), x, y, settings)
    run.summaries["square"]["success_rate"]
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from advlab.attacks import build_attack
from advlab.attacks.blackbox import BLACKBOX_ATTACKS, Oracle
from advlab.attacks.blackbox.base import BlackBoxAttack
from advlab.data import ImageDataset
from advlab.errors import AdvlabError
from advlab.runtime import BatchSize, as_batch_size

# The one set of defaults of a black-box run, whichever command starts it. L2 eps 2.0: on MNIST's
# 28x28 pixels an L2 radius of 0.3 allows no more than one pixel moved by 0.3, too small to say
# anything; 100 images: each costs up to `queries` forward passes.
DEFAULT_EPS = {"linf": 0.3, "l2": 2.0}


@dataclass(frozen=True)
class BlackboxSettings:
    """What a black-box run does: the attacks by name (BLACKBOX_ATTACKS), the threat model (eps None:
    DEFAULT_EPS of the norm), the first n test images in batches, queries per image, Square's p_init,
    the seed, and whether to run white-box PGD-100 on the same images as a reference."""

    attacks: tuple[str, ...] = ("square",)
    norm: str = "linf"
    eps: float | None = None
    n: int = 100
    queries: int = 10_000
    batch_size: int = 100
    p_init: float | None = None
    seed: int = 0
    whitebox_pgd: bool = False

    @property
    def bound(self) -> float:
        return DEFAULT_EPS[self.norm] if self.eps is None else self.eps

    def build(self) -> list[BlackBoxAttack]:
        """The configured attacks; an unknown name is a user error (before any query)."""
        if self.norm not in DEFAULT_EPS:
            raise AdvlabError(f"black-box attacks take norm linf or l2, got {self.norm!r}")
        unknown = [name for name in self.attacks if name not in BLACKBOX_ATTACKS]
        if unknown or not self.attacks:
            raise AdvlabError(f"unknown black-box attack {', '.join(unknown) or '(none)'!r}; choose one of "
                              f"{', '.join(BLACKBOX_ATTACKS)}")
        extra = {"p_init": self.p_init} if self.p_init is not None else {}
        return [build_attack(name, eps=self.bound, norm=self.norm, max_queries=self.queries, seed=self.seed,
                             **(extra if name == "square" else {})) for name in self.attacks]


@dataclass
class BlackboxRun:
    """Per attack: the per-image results (numpy arrays, adversarial images, seconds) and their summary;
    the oracle's queries in all; the white-box reference when asked for."""

    settings: BlackboxSettings
    runs: dict[str, dict]
    summaries: dict[str, dict]
    oracle_queries_used: int
    whitebox: dict | None = None
    curves: dict[str, np.ndarray] = field(default_factory=dict)  # queries at success, correctly classified


def check_oracle_fits(oracle: Oracle, data: ImageDataset) -> None:
    if oracle.input_shape is not None and tuple(oracle.input_shape) != data.shape:
        raise AdvlabError(f"the oracle takes images of shape {tuple(oracle.input_shape)} but {data.name} images are "
                          f"{data.shape}; pass the matching --dataset")


def attack_in_batches(attack: BlackBoxAttack, oracle: Oracle, x: torch.Tensor, y: torch.Tensor,
                      batch: int | BatchSize, progress: bool = True) -> dict:
    """Run attack over x in batches until done or the oracle's budget is spent; per-image results
    concatenated (numpy), the adversarial images, the wall time and whether the budget ran out. A batch
    that runs out of memory (an in-process oracle's forward pass) is attacked again at half the size
    (advlab.runtime.BatchSize); the queries it had spent stay counted by the oracle."""
    parts: dict[str, list] = {k: [] for k in ("success", "clean_correct", "queries", "queries_at_success",
                                              "linf", "l2", "adv_pred")}
    advs = []
    start = time.perf_counter()
    exhausted = False
    bar = tqdm(total=len(x), desc=attack.name, disable=not progress, unit="image")

    def one(rows: slice) -> None:
        nonlocal exhausted
        if exhausted:
            return
        r = attack(oracle, x[rows], y[rows])
        exhausted = r.extra["budget_exhausted"]
        for key, value in (("success", r.success), ("clean_correct", r.clean_correct),
                           ("queries", r.extra["queries"]), ("queries_at_success", r.extra["queries_at_success"]),
                           ("linf", r.norms["linf"]), ("l2", r.norms["l2"]), ("adv_pred", r.adv_pred)):
            parts[key].append(value.cpu().numpy())
        advs.append(r.adv.cpu())
        bar.update(rows.stop - rows.start)

    try:
        as_batch_size(batch).map(one, len(x))
    finally:
        bar.close()
    out = {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}
    out["adv"] = torch.cat(advs) if advs else x[:0]
    out["seconds"] = time.perf_counter() - start
    out["budget_exhausted"] = exhausted
    return out


def summarize(run: dict, max_queries: int) -> dict:
    """Success rate and query statistics on the images the oracle classified correctly."""
    ok = run["clean_correct"].astype(bool)
    broken = run["success"].astype(bool) & ok
    q = run["queries_at_success"][broken]
    budgets = [b for b in (100, 500, 1000, 2500, 5000, 10_000) if b <= max_queries]
    return {"images": int(len(ok)), "clean_correct": int(ok.sum()),
            "success_rate": float(broken.sum() / max(ok.sum(), 1)),
            "median_queries": float(np.median(q)) if len(q) else None,
            "mean_queries": float(np.mean(q)) if len(q) else None,
            "total_queries": int(run["queries"].sum()),
            "success_at_budget": {str(b): float(((run["queries_at_success"][ok] >= 0)
                                                 & (run["queries_at_success"][ok] <= b)).mean()) if ok.any() else 0.0
                                  for b in budgets},
            "max_linf_of_successes": float(run["linf"][broken].max()) if broken.any() else None,
            "max_l2_of_successes": float(run["l2"][broken].max()) if broken.any() else None,
            "seconds": run["seconds"], "budget_exhausted": bool(run["budget_exhausted"])}


def whitebox_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str, steps: int = 100) -> dict:
    """The white-box reference: PGD-100 (step 2.5 eps / steps, no random start) on the same images."""
    from advlab.attacks import PGD

    result = PGD(eps=eps, steps=steps, step_size=2.5 * eps / steps, norm=norm, random_start=False, loss="ce")(
        model, x, y)
    ok = result.clean_correct
    return {"attack": f"PGD-{steps} (white-box, step 2.5 eps/{steps})",
            "success_rate": float((result.success & ok).sum() / max(int(ok.sum()), 1)), "clean_correct": int(ok.sum())}


def run_blackbox(oracle: Oracle, x: torch.Tensor, y: torch.Tensor, settings: BlackboxSettings,
                 whitebox_model: nn.Module | None = None, device: torch.device | str = "cpu",
                 progress: bool = True, batch: BatchSize | None = None) -> BlackboxRun:
    """Every attack of settings over (x, y) through oracle; with settings.whitebox_pgd, white-box PGD on
    whitebox_model (the model behind an in-process oracle) and each attack's ratio to it. batch: the
    run's BatchSize (default: settings.batch_size), halved when a batch runs out of memory."""
    attacks = settings.build()
    batch = batch if batch is not None else as_batch_size(settings.batch_size)
    if settings.whitebox_pgd and whitebox_model is None:
        raise AdvlabError("--whitebox-pgd needs an in-process --model (white-box access)")
    runs, summaries, curves = {}, {}, {}
    for attack in attacks:
        runs[attack.name] = attack_in_batches(attack, oracle, x, y, batch, progress)
        summaries[attack.name] = summarize(runs[attack.name], settings.queries)
        curves[attack.name] = runs[attack.name]["queries_at_success"][runs[attack.name]["clean_correct"].astype(bool)]
    whitebox = None
    if settings.whitebox_pgd:
        whitebox = whitebox_pgd(whitebox_model, x.to(device), y.to(device), settings.bound, settings.norm)
        for s in summaries.values():
            s["ratio_to_whitebox"] = s["success_rate"] / max(whitebox["success_rate"], 1e-12)
    return BlackboxRun(settings, runs, summaries, oracle.used, whitebox, curves)


# --- substitute training (Papernot et al. 2017) ---
@dataclass(frozen=True)
class SubstituteSettings:
    """Substitute training: seed images labeled by the oracle, Jacobian augmentation rounds, the
    substitute (and extra ensemble members trained on the same labels), and the attack crafting the
    final examples (fgsm, pgd, mifgsm, mifgsm-di) at eps. lr and batch_size None: the optimizer's."""

    dataset: str = "mnist"
    seeds: int = 150
    rounds: int = 6
    lam: float = 0.1
    substitute: str = "mlp"
    ensemble: tuple[str, ...] = ()
    epochs: int = 10
    eps: float = 0.3
    n_eval: int = 1000
    tau: int | None = None
    reservoir_from: int | None = None
    reservoir_size: int = 400
    optimizer: str = "adam"
    lr: float | None = None
    batch_size: int | None = None
    jacobian: str = "probs"
    craft: str = "fgsm"
    seed: int = 0

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (1e-3 if self.optimizer == "adam" else 1e-2)

    @property
    def batch(self) -> int:
        return self.batch_size or (32 if self.optimizer == "adam" else 128)

    def check(self, test_images: int) -> None:
        """User errors, before any query: too few test images, unknown architectures or attack."""
        from advlab.models import architecture

        if self.seeds + self.n_eval > test_images:
            raise AdvlabError(f"--seeds + --n-eval must fit in the {test_images} test images")
        for name in [self.substitute, *self.ensemble]:
            architecture(name)
        crafting_attack(self.craft, self.eps)

    def config(self) -> dict:
        return {**asdict(self), "ensemble": list(self.ensemble), "lr": self.learning_rate, "batch_size": self.batch}


def crafting_attack(name: str, eps: float):
    """The attack that crafts the final examples on the substitute."""
    from advlab.attacks import FGSM, MIFGSM, PGD

    if name == "fgsm":
        return FGSM(eps=eps, norm="linf")
    if name == "pgd":
        return PGD(eps=eps, steps=10, step_size=0.25 * eps, norm="linf", random_start=False)
    if name in ("mifgsm", "mifgsm-di"):
        return MIFGSM(eps=eps, steps=10, decay=1.0, diversity=0.5 if name == "mifgsm-di" else 0.0)
    raise AdvlabError(f"unknown crafting attack {name!r}; choose fgsm, pgd, mifgsm or mifgsm-di")


def substitute_attack(oracle: Oracle, eval_oracle: Oracle, test: ImageDataset, settings: SubstituteSettings,
                      device: torch.device | str = "cpu", progress: bool = True) -> dict:
    """Train a substitute from oracle labels of the first settings.seeds test images, attack it, and
    measure transfer on the next n_eval images through eval_oracle (whose queries are not the
    attacker's). Returns history (per round), final and the query counts."""
    from advlab.attacks.blackbox.substitute import SubstituteEnsemble, SubstituteTraining

    settings.check(len(test))
    craft = crafting_attack(settings.craft, settings.eps)
    s = settings
    trainer = SubstituteTraining(architecture=s.substitute, dataset=s.dataset, rounds=s.rounds, lam=s.lam,
                                 epochs=s.epochs, lr=s.learning_rate, batch_size=s.batch, fgsm_eps=s.eps, seed=s.seed,
                                 tau=s.tau, reservoir_from=s.reservoir_from, reservoir_size=s.reservoir_size,
                                 optimizer=s.optimizer, jacobian=s.jacobian)
    seeds_x, _ = test.subset(slice(0, s.seeds)).tensors()
    eval_x, eval_y = test.subset(slice(s.seeds, s.seeds + s.n_eval)).tensors()
    substitute, history = trainer.train(oracle, seeds_x, eval_x, eval_y, eval_oracle, device=device,
                                        progress=progress)
    data_x, data_y = trainer.training_set
    generator = torch.Generator().manual_seed(s.seed)
    members = [substitute] + [trainer.fit(name, data_x, data_y, oracle.num_classes or 10, generator)
                              for name in s.ensemble]
    final_model = members[0] if len(members) == 1 else SubstituteEnsemble(members)
    final = trainer.evaluate(final_model, eval_x.to(device), eval_y.to(device), eval_oracle, attack=craft)
    final.update({"substitutes": [s.substitute, *s.ensemble], "craft": s.craft,
                  "oracle_labels": history[-1]["oracle_queries"]})
    return {"history": history, "final": final, "oracle_labels": history[-1]["oracle_queries"],
            "oracle_queries_used": oracle.used, "budget_exhausted": trainer.budget_exhausted}
