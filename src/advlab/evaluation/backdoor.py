"""The backdoor pipeline end to end (Hayase et al. 2021's setting): poison the training set, train,
extract representations, detect and remove the poisons, retrain, and compare.

`run_backdoor` returns the metrics and the artifacts (models, poisoned set, representations and
detector scores of the target class); it writes nothing but the model cache.
`advlab.report.backdoor.add_backdoor_sections` turns the result into report sections.
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn

from advlab.data import ImageDataset
from advlab.detection import DETECTORS, detect, extract_features
from advlab.detection.representations import PENULTIMATE, describe_layer, resolve_layer
from advlab.detection.spectre import MAX_K
from advlab.errors import AdvlabError
from advlab.models.spec import SpecOptions, check_model_fits, load_spec, spec_kind
from advlab.poisoning import (
    DEFAULT_TARGET,
    PoisonedDataset,
    attack_success_rate,
    clean_accuracy,
    make_trigger,
    poison_dataset,
)
from advlab.runtime import BatchSize, seed_everything
from advlab.training import default_config, fit, train_model

DEFENSES = tuple(DETECTORS)


@dataclass
class BackdoorSettings:
    """Everything the pipeline needs besides data and device."""

    dataset: str = "cifar10"
    trigger: str = "patch"
    trigger_options: dict = field(default_factory=dict)
    target: str | None = None
    source: str | None = None
    n_poison: int = 500
    defenses: tuple[str, ...] = ("spectre",)
    retrain: tuple[str, ...] | None = None  # None: retrain after every defense
    train_overrides: dict = field(default_factory=dict)
    train_subset: int | None = None
    layer: str = PENULTIMATE
    scan: str = "target"  # "target": the target class only (SPECTRE's setting); "all": every class
    k: int | None = None
    max_k: int | None = MAX_K
    seed: int = 0
    use_cache: bool = True
    data_dir: str | None = None
    # a model spec (checkpoint, timm:NAME, PATH.py:FUNCTION, TorchScript, ONNX) fine-tuned in place of
    # training train_overrides' architecture from scratch; spec_options: SpecOptions' fields (--weights ...)
    model_spec: str | None = None
    spec_options: dict = field(default_factory=dict)
    batch_size: int = 500  # the model passes' (representations, accuracy); training keeps its recipe's


@dataclass
class BackdoorResult:
    """What `run_backdoor` measured and built.

    metrics: clean accuracy and attack success of the unpoisoned, poisoned and retrained models,
    detection true/false positives per defense, the training config. models: "unpoisoned",
    "poisoned" and "after NAME" for each retraining. target_features / target_truth: the scanned
    representations of the target class and which rows are poisons; class_scores: each detector's
    scores on those rows."""

    metrics: dict
    poisoned: PoisonedDataset
    models: dict[str, nn.Module]
    target_features: np.ndarray
    target_truth: np.ndarray
    class_scores: dict[str, np.ndarray]
    settings: BackdoorSettings
    batch: BatchSize | None = None  # the model passes' batch size, as the run ended with it


def default_target(classes: list[str]) -> str:
    return DEFAULT_TARGET if DEFAULT_TARGET in classes else classes[0]


def digest(indices: np.ndarray) -> str:
    return hashlib.sha1(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()[:16]


def check_settings(settings: BackdoorSettings) -> None:
    for name in settings.defenses:
        if name not in DEFENSES:
            raise AdvlabError(f"unknown defense {name!r}; choose from {', '.join(DEFENSES)}")
    if settings.scan not in ("target", "all"):
        raise AdvlabError(f"--scan must be target or all, got {settings.scan!r}")


def training_subset(train: ImageDataset, settings: BackdoorSettings) -> ImageDataset:
    """The training images the pipeline uses: all, or a seeded random subset of train_subset."""
    if not settings.train_subset:
        return train
    if settings.train_subset > len(train):
        raise AdvlabError(f"--train-subset {settings.train_subset} exceeds the {len(train)} training images")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(settings.seed))
    return train.subset(order[: settings.train_subset].sort().values, name=f"{train.name}-{settings.train_subset}")


def _train(config, data: ImageDataset, test: ImageDataset, device, progress: bool, use_cache: bool, what: str,
           log: Callable[[str], None]):
    start = time.perf_counter()
    model, meta, path, cached = train_model(config, device, train_data=data, test_data=test, progress=progress,
                                            use_cache=use_cache)
    seconds = time.perf_counter() - start
    log(f"backdoor: {what}: {'cached' if cached else f'trained in {seconds:.0f} s'}, clean accuracy "
        f"{meta['test_accuracy']:.4f} ({path.name})")
    return model, {"checkpoint": str(path), "cached": cached, "seconds": seconds}


def _evaluate(model, test: ImageDataset, poisoned: PoisonedDataset, device, batch: BatchSize | int = 500) -> dict:
    return {"clean_accuracy": clean_accuracy(model, test, device, batch),
            "attack_success": attack_success_rate(model, test, poisoned.trigger, poisoned.target, poisoned.source,
                                                  device, batch)}


def spec_options(settings: BackdoorSettings) -> SpecOptions:
    given = dict(settings.spec_options)
    for key in ("mean", "std", "input_shape"):
        if given.get(key) is not None:
            given[key] = tuple(given[key])
    return SpecOptions(**given)


def load_trainable(settings: BackdoorSettings, train: ImageDataset, device) -> nn.Module:
    """The model spec's module, checked before any work: it resolves, fits the data, has the layer, and
    has trainable floating-point parameters (a TorchScript or ONNX model qualifies only if it does)."""
    spec = settings.model_spec
    if spec_kind(spec) is None:
        raise AdvlabError(f"--model {spec!r} is neither an advlab architecture nor a model spec (checkpoint, "
                          "timm:NAME, PATH.py:FUNCTION, package.module:FUNCTION, TorchScript, .onnx)")
    module, info = load_spec(spec, spec_options(settings), device, train.shape)
    check_model_fits(info.metadata(), train, spec)
    resolve_layer(module, settings.layer)  # an unknown layer names the choices here
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad and p.is_floating_point())
    if trainable == 0:
        raise AdvlabError(f"{spec} has no trainable parameters (a {info.kind} model whose weights are constants); "
                          "backdoor needs a model it can train: give a factory, timm:NAME or advlab checkpoint")
    return module


def _fine_tune(initial: nn.Module, config, data: ImageDataset, test: ImageDataset, device, progress: bool,
               what: str, spec: str, batch: BatchSize, log: Callable[[str], None]):
    """A copy of the spec's module trained on data with config's recipe (epochs, optimizer, schedule,
    augmentation, seed); not cached (the cache holds advlab architectures)."""
    start = time.perf_counter()
    model = copy.deepcopy(initial)
    seed_everything(config.seed)
    history = fit(model, data, config, device, progress=progress)
    model.eval()
    seconds = time.perf_counter() - start
    accuracy = clean_accuracy(model, test, device, batch)
    log(f"backdoor: {what}: {spec} fine-tuned in {seconds:.0f} s, clean accuracy {accuracy:.4f}")
    return model, {"checkpoint": None, "cached": False, "seconds": seconds, "fine_tuned_from": spec,
                   "final_train_loss": history[-1]["loss"] if history else None}


def run_backdoor(settings: BackdoorSettings, train: ImageDataset, test: ImageDataset, device: torch.device,
                 progress: bool = True, log: Callable[[str], None] = print) -> BackdoorResult:
    """Poison, train, detect, retrain; return the metrics and the artifacts (models are cached by their
    full recipe, poisoning and removed rows included)."""
    check_settings(settings)
    train = training_subset(train, settings)
    batch = BatchSize(settings.batch_size, origin="the default of the passes that read representations and accuracy")
    initial = load_trainable(settings, train, device) if settings.model_spec else None
    target = settings.target or default_target(train.classes)
    trigger = make_trigger(settings.trigger, **settings.trigger_options)
    poisoned = poison_dataset(train, trigger, target, n_poison=settings.n_poison, source=settings.source,
                              seed=settings.seed)
    target_index, target_name = poisoned.target, train.classes[poisoned.target]
    subset_note = {"subset": {"n": settings.train_subset, "seed": settings.seed}} if settings.train_subset else {}
    base = default_config(settings.dataset, **settings.train_overrides)
    if initial is not None:  # the recipe's optimizer, schedule and epochs, applied to the spec's model
        base = replace(base, model=settings.model_spec)

    def config_with(recipe: dict):
        config = default_config(settings.dataset, **settings.train_overrides, recipe={**recipe, **subset_note})
        return config if initial is None else replace(config, model=settings.model_spec)

    def train_on(config, data, what):
        if initial is not None:
            return _fine_tune(initial, config, data, test, device, progress, what, settings.model_spec, batch, log)
        return _train(config, data, test, device, progress, settings.use_cache, what, log)

    log(f"backdoor: {poisoned.n_poison} poisons ({trigger.name}) -> '{target_name}' among {len(train)} "
        f"training images; {base.model}{' (fine-tuned)' if initial is not None else ''}, {base.epochs} epochs")
    metrics: dict = {"poisoning": poisoned.describe(), "train_config": base.to_dict(), "layer": settings.layer,
                     "scan": settings.scan}
    models: dict[str, nn.Module] = {}
    recipe = {"method": "backdoor", "poisoning": poisoned.describe()}
    model, info = train_on(config_with(recipe), poisoned.data, "poisoned model")
    models["poisoned"] = model
    metrics["poisoned"] = {**_evaluate(model, test, poisoned, device, batch), **info}
    log(f"backdoor: poisoned model: attack success {metrics['poisoned']['attack_success']:.4f}")

    # Representations of the scanned classes only (un-augmented images, eval mode).
    labels = poisoned.data.labels.numpy()
    rows = np.flatnonzero(labels == target_index) if settings.scan == "target" else np.arange(len(labels))
    start = time.perf_counter()
    features = extract_features(model, poisoned.data.subset(torch.from_numpy(rows)), settings.layer, batch,
                                device=device, progress=progress)
    metrics["layer_description"] = describe_layer(model, settings.layer)
    metrics["features_shape"] = list(features.shape)
    metrics["features_seconds"] = time.perf_counter() - start
    truth = poisoned.poisoned.numpy()
    budget = {target_index: poisoned.n_poison} if settings.scan == "target" else poisoned.n_poison
    retrain = settings.defenses if settings.retrain is None else settings.retrain
    in_target = labels[rows] == target_index
    detections, class_scores = {}, {}
    for name in settings.defenses:
        start = time.perf_counter()
        options = {"m": budget}
        if name == "spectre":
            options.update(k=settings.k, max_k=settings.max_k)
        result = detect(name, features, labels[rows], **options)
        removed = np.zeros(len(labels), dtype=bool)
        removed[rows[result.removed]] = True
        entry = {"seconds": time.perf_counter() - start, "removed": int(removed.sum()),
                 "true_positives": int((removed & truth).sum()), "false_positives": int((removed & ~truth).sum()),
                 "poisons_missed": int((~removed & truth).sum()),
                 "per_class": {str(c): v for c, v in result.per_class.items()}}
        log(f"backdoor: {name}: removed {entry['removed']}, {entry['true_positives']} of {poisoned.n_poison} "
            f"poisons, {entry['false_positives']} clean ({entry['seconds']:.1f} s)")
        class_scores[name] = result.scores[in_target]
        if name in retrain and not removed.any():  # the same data and seed train the same weights
            entry["after"] = {**metrics["poisoned"], "note": "nothing removed: the poisoned model is the retrained one"}
            models[f"after {name}"] = model
        elif name in retrain:
            kept = poisoned.without(removed)
            retrain_recipe = {"method": "backdoor-retrain", "poisoning": poisoned.describe(), "defense": name,
                              "layer": settings.layer, "removed": digest(np.flatnonzero(removed))}
            retrained, info = train_on(config_with(retrain_recipe), kept, f"retrained after {name}")
            models[f"after {name}"] = retrained
            entry["after"] = {**_evaluate(retrained, test, poisoned, device, batch), **info}
            log(f"backdoor: after {name}: clean accuracy {entry['after']['clean_accuracy']:.4f}, attack success "
                f"{entry['after']['attack_success']:.4f}")
        detections[name] = entry
    metrics["defenses"] = detections
    # the same recipe on the unpoisoned set, last (detection results come first on a slow machine); it
    # shares the cache with `advlab train` when no subset is taken
    clean_config = config_with({"method": "standard"}) if subset_note else base
    clean_model, clean_info = train_on(clean_config, train, "unpoisoned model")
    models["unpoisoned"] = clean_model
    metrics["unpoisoned"] = {**_evaluate(clean_model, test, poisoned, device, batch), **clean_info}
    metrics["batch_size"] = batch.summary()
    return BackdoorResult(metrics, poisoned, models, features[in_target], truth[rows][in_target], class_scores,
                          settings, batch)


def summary_lines(metrics: dict) -> list[str]:
    """One line per model: clean accuracy and attack success (and what each defense removed)."""
    def line(name, entry):
        return f"  {name:<24} clean {entry['clean_accuracy']:.4f}  attack success {entry['attack_success']:.4f}"

    lines = [line("unpoisoned", metrics["unpoisoned"]), line("poisoned, no defense", metrics["poisoned"])]
    for name, entry in metrics["defenses"].items():
        caught = f"  (removed {entry['true_positives']} poisons, {entry['false_positives']} clean)"
        lines.append(line(f"after {name}", entry["after"]) + caught if "after" in entry
                     else f"  {name:<24} not retrained{caught}")
    return lines
