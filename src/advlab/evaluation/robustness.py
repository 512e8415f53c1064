"""The robustness evaluation of one model as `advlab evaluate` runs it: the classic protocol
(advlab.evaluation.defense: FGSM, PGD-CE and PGD-C&W with restarts, per-sample worst case, the
gradient-masking diagnostics), recorded in and reused from the evaluation records; or the standard
and rand suites (advlab.evaluation.suite).

    settings = EvaluationSettings(eps=(0.1, 0.3), dataset="mnist")
    outcome = evaluate_robustness(model, meta, "model.safetensors", x, y, settings)
    outcome.evaluation.robust.worst_case(), outcome.result  # the evaluation and its JSON-ready record
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import nn

from advlab.errors import AdvlabError
from advlab.evaluation.defense import DefenseEvaluation, evaluate_defense
from advlab.evaluation.records import Record, RecordStore, data_sha256, model_hash, model_summary, recorded
from advlab.evaluation.suite import SUITES, SuiteConfig, SuiteEvaluation, run_suite
from advlab.runtime import BatchSize, as_batch_size

PROTOCOL = "classic"  # FGSM, PGD-CE and PGD-C&W with restarts, per-sample worst case, the diagnostics


@dataclass(frozen=True)
class EvaluationSettings:
    """Everything that shapes an evaluation's result but the model and the images. eps None: 0.1, 0.2,
    0.3 for L-inf; for L2 0.5 on CIFAR-10 and 2.0 elsewhere."""

    eps: tuple[float, ...] | None = None
    dataset: str = "mnist"
    suite: str = "classic"
    norm: str = "linf"
    seed: int = 0
    batch_size: int = 500
    precision: str = "fp32"
    # classic
    steps: int = 40
    restarts: int = 10
    step_size: float | None = None
    blackbox_n: int = 100
    blackbox_queries: int = 1000
    unbounded_n: int = 200
    effort_n: int = 200
    # standard and rand (schedule "fast" or "autoattack"; targets and fab None: the schedule's)
    schedule: str = "fast"
    targets: int | None = None
    fab: str | None = None
    iterations: int = 100
    square_queries: int = 5000
    eot: int | None = None  # None: the schedule's (SuiteConfig)

    @property
    def radii(self) -> list[float]:
        if self.eps is not None:
            return list(self.eps)
        return [0.1, 0.2, 0.3] if self.norm == "linf" else [0.5 if self.dataset == "cifar10" else 2.0]

    def check(self, image_shape: tuple[int, ...] | None = None) -> None:
        """User errors, before any work."""
        eps = self.radii
        if self.suite not in SUITES:
            raise AdvlabError(f"unknown suite {self.suite!r}; choose one of {', '.join(SUITES)}")
        if self.suite == "classic" and self.norm != "linf":
            raise AdvlabError("--suite classic is L-inf only; use --suite standard for --norm l2")
        if any(e <= 0 for e in eps) and self.suite != "classic":
            raise AdvlabError(f"--eps must be positive radii for --suite {self.suite}; got {eps}")
        if any(e < 0 for e in eps):
            raise AdvlabError(f"--eps must not be negative; got {eps}")
        if self.norm == "linf" and any(e > 1 for e in eps):
            raise AdvlabError(f"--eps are L-inf radii on the [0, 1] pixel scale, at most 1; got {eps}")
        if self.blackbox_n < 0 or self.unbounded_n < 0 or self.effort_n < 0:
            raise AdvlabError("--blackbox-n, --unbounded-n and --effort-n must be 0 (skip) or positive")
        if self.step_size is not None and not 0 < self.step_size <= 1:
            raise AdvlabError(f"--step-size must be in (0, 1], got {self.step_size}")
        if self.suite != "classic":
            self.suite_config()  # an unknown schedule or FAB-T mode
        if self.norm == "l2" and image_shape is not None:
            bound = math.sqrt(math.prod(image_shape))
            if any(e > bound for e in eps):
                raise AdvlabError(f"--eps for L2 must be at most {bound:g} (the whole image); got {eps}")

    def config(self) -> dict:
        """The run folder's record of the settings."""
        out = {"eps": self.radii, "suite": self.suite, "norm": self.norm, "seed": self.seed,
               "precision": self.precision}
        if self.suite == "classic":
            return {**out, "steps": self.steps, "restarts": self.restarts, "step_size": self.step_size}
        return {**out, "schedule": self.schedule, **self.suite_config().to_dict()}

    def suite_config(self) -> SuiteConfig:
        """The standard/rand suite's settings: the schedule's, then the explicit ones."""
        return SuiteConfig.schedule(self.schedule, steps=self.iterations, targets=self.targets, fab=self.fab,
                                    square_queries=self.square_queries, eot=self.eot, seed=self.seed)

    def suite_record_settings(self) -> dict:
        """A standard/rand evaluation's key in the evaluation records: the norm, the eps, every setting of
        the schedule, the unbounded check's size and the batch size (the images are hashed apart)."""
        return {"norm": self.norm, "eps": sorted(self.radii), **self.suite_config().to_dict(),
                "unbounded_n": self.unbounded_n, "batch_size": self.batch_size, "dataset": self.dataset,
                **({"precision": self.precision} if self.precision != "fp32" else {})}

    def record_settings(self) -> dict:
        """The classic protocol's key in the evaluation records (the images are hashed apart)."""
        return {"norm": "linf", "eps": sorted(self.radii), "steps": self.steps, "restarts": self.restarts,
                "step_size": self.step_size, "seed": self.seed, "blackbox_n": self.blackbox_n,
                "blackbox_queries": self.blackbox_queries, "unbounded_n": self.unbounded_n, "effort_n": self.effort_n,
                "batch_size": self.batch_size, "dataset": self.dataset,
                **({"precision": self.precision} if self.precision != "fp32" else {})}


def recipe_label(meta: dict) -> str:
    """A short name for a checkpoint from the recipe it records (a foreign model: its architecture)."""
    if meta.get("spec_kind") not in (None, "advlab"):
        return meta["architecture"]
    recipe = meta.get("recipe") or {"method": "standard"}
    settings = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in recipe.items()
                         if k != "method")
    return f"{recipe.get('method', '?')}" + (f" ({settings})" if settings else "")


@dataclass
class RobustnessOutcome:
    """The evaluation (DefenseEvaluation for classic, SuiteEvaluation otherwise), its JSON-ready result,
    and the evaluation record it was read from or written to."""

    evaluation: DefenseEvaluation | SuiteEvaluation
    result: dict
    record: Record | None = None
    reused: bool = False


def _timed(compute) -> tuple[object, dict]:
    start, cpu = time.perf_counter(), time.process_time()
    value = compute()
    return value, {"wall_seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu,
                   "threads": torch.get_num_threads()}


def evaluate_robustness(model: nn.Module, meta: dict, spec: str, x: torch.Tensor, y: torch.Tensor,
                        settings: EvaluationSettings, device: torch.device | str = "cpu", progress: bool = True,
                        store: RecordStore | None = None, force: bool = False, data_hash: str | None = None,
                        batch: BatchSize | None = None) -> RobustnessOutcome:
    """Evaluate model (checkpoint spec, its metadata meta) on (x, y). Every protocol (classic, and the
    standard and rand suites under their own names) is taken from the evaluation records when they hold
    it (unless force), else computed and recorded. batch: the run's BatchSize (default: a fresh one at
    settings.batch_size); a batch that runs out of memory is retried at half the size, and the size the
    run ended with is in batch.size. The records are keyed by settings.batch_size, the size asked for."""
    batch = batch if batch is not None else as_batch_size(settings.batch_size)
    label = recipe_label(meta)
    device = torch.device(device)
    store = store if store is not None else RecordStore()
    data_hash = data_hash or data_sha256(x, y)
    if settings.suite != "classic":
        def compute_suite() -> dict:
            ev, timing = _timed(lambda: run_suite(model, x, y, settings.radii, settings.norm, settings.suite,
                                                  config=settings.suite_config(), batch_size=batch,
                                                  device=device, progress=progress, unbounded_n=settings.unbounded_n))
            return {"label": label, **ev.to_record(), **timing, "device": str(device)}

        record, reused = recorded(store, model_hash(spec, model), settings.suite, settings.suite_record_settings(),
                                  data_hash, model_summary(meta, label, spec), compute_suite, force=force)
        result = {k: v for k, v in record.result.items() if k != "samples"}
        return RobustnessOutcome(SuiteEvaluation.from_record(record.result),
                                 {**result, "reused_record": reused, "record": record.key}, record, reused)

    def compute() -> dict:
        s = settings
        ev, timing = _timed(lambda: evaluate_defense(model, x, y, s.radii, s.steps, s.restarts, s.step_size,
                                                     s.blackbox_n, s.blackbox_queries, s.unbounded_n, s.seed,
                                                     batch, device, progress, effort_n=s.effort_n))
        return {"label": label, **ev.to_record(), "wall_seconds": timing["wall_seconds"],
                "cpu_seconds": timing["cpu_seconds"], "device": str(device), "threads": timing["threads"]}

    record, reused = recorded(store, model_hash(spec, model), PROTOCOL, settings.record_settings(), data_hash,
                              model_summary(meta, label, spec), compute, force=force)
    result = {k: v for k, v in record.result.items() if k != "broken_at"}
    return RobustnessOutcome(DefenseEvaluation.from_record(record.result),
                             {**result, "reused_record": reused, "record": record.key}, record, reused)
