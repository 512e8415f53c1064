"""Audit a training folder: which files are poisoned? (the question SPECTRE answers for a user)

`audit_dataset(model, data)` takes representations of every training image at a named layer of the
model trained on it, runs a detector per class (SPECTRE, spectral signatures or activation
clustering) and returns the files with their scores, the ones to remove marked, and each class's
top-6 PCA projection for the figures. `retrain_without` trains the same recipe on the kept files;
`triggered_success` measures how often images carrying the user's trigger go to the target class.

The poison budget per class (m_y) is either an upper bound (poison_fraction: m_y = round(f n_y);
the detector removes round(1.5 m_y), the papers' rule) or estimated from the scores themselves: the
detector scores the class as if up to a quarter of it were poisoned, and a file is suspicious when
its score lies more than 10 robust standard deviations (1.4826 x the median absolute deviation)
above the class's median score. Poisons that planted a backdoor stand far apart in SPECTRE's
whitened scores (tens of such deviations on our MNIST check, clean files under 8); a class with no
such outlier is taken as clean and keeps every file. Activation clustering without a bound uses its
own test (a real minority cluster: under 35% of the class, silhouette over 0.10).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from advlab.detection import DETECTORS, detect, extract_features
from advlab.detection.representations import PENULTIMATE, describe_layer, resolve_layer
from advlab.detection.spectre import MAX_K, pca_scores
from advlab.errors import AdvlabError
from advlab.models import architecture, create_model
from advlab.models.inference import predict_logits
from advlab.models.spec import SpecOptions, check_model_fits, load_spec, spec_kind
from advlab.runtime import BatchSize, as_batch_size
from advlab.training import TrainConfig, default_config, train_model

MIN_CLASS_ROWS = 8  # fewer images than this in a class: nothing to estimate a covariance from


@dataclass
class Audit:
    """The findings of an audit: one score per training file (higher = more suspicious, comparable
    within a class), the files to remove, and per-class details."""

    method: str
    layer: str
    layer_description: str
    files: list[str]
    labels: np.ndarray
    classes: list[str]
    scores: np.ndarray
    removed: np.ndarray
    budgets: dict[int, int]
    estimated: bool
    per_class: dict = field(default_factory=dict)
    projections: dict[int, np.ndarray] = field(default_factory=dict, repr=False)  # class -> top-6 PCA
    seconds: float = 0.0

    def suspicious(self) -> list[dict]:
        """The files to remove, most suspicious first within each class, classes in label order."""
        rows = np.flatnonzero(self.removed)
        rows = rows[np.lexsort((-self.scores[rows], self.labels[rows]))]
        rank = {}
        for c in np.unique(self.labels):
            members = np.flatnonzero(self.labels == c)
            for position, row in enumerate(members[np.argsort(-self.scores[members], kind="stable")]):
                rank[int(row)] = position + 1
        return [{"file": self.files[r], "class": self.classes[self.labels[r]], "label": int(self.labels[r]),
                 "score": float(self.scores[r]), "rank_in_class": rank[int(r)]} for r in rows]

    def to_dict(self) -> dict:
        return {"method": self.method, "layer": self.layer, "layer_description": self.layer_description,
                "files": len(self.files), "removed": int(self.removed.sum()), "estimated_budget": self.estimated,
                "budgets": {self.classes[c]: m for c, m in self.budgets.items()},
                "per_class": {self.classes[int(c)]: v for c, v in self.per_class.items()},
                "seconds": self.seconds, "suspicious": self.suspicious()}


ESTIMATE_BOUND = 0.25  # the share of a class the detector is told may be poisoned, when estimating
OUTLIER_Z = 10.0  # robust standard deviations above the class's median score that make a file suspicious


def outliers(scores: np.ndarray, z: float = OUTLIER_Z) -> np.ndarray:
    """Scores more than z robust standard deviations (1.4826 MAD) above their median."""
    median = np.median(scores)
    spread = 1.4826 * np.median(np.abs(scores - median))
    spread = max(spread, 1e-12 * max(float(np.abs(scores).max()), 1e-300))
    return (scores - median) / spread > z


def audit_dataset(model: nn.Module, data, method: str = "spectre", layer: str | None = PENULTIMATE,
                  poison_fraction: float | None = None, device: torch.device | str = "cpu",
                  batch_size: int | BatchSize = 256,
                  max_k: int | None = MAX_K, progress: bool = False, seed: int = 0) -> Audit:
    """Score every training image of `data` (an image-folder data set: it knows its files) for being
    a poison, from `model`'s representations at `layer`. poison_fraction: an upper bound on each
    class's poison share; None estimates it (see the module)."""
    if method not in DETECTORS:
        raise AdvlabError(f"unknown detection method {method!r}; choose one of {', '.join(DETECTORS)}")
    files = getattr(data, "files", None)
    if files is None:
        files = [f"{data.name}[{i}]" for i in range(len(data))]
    start = time.perf_counter()
    features = extract_features(model, data, layer, batch_size=batch_size, device=device, progress=progress)
    labels = data.labels.numpy().astype(np.int64)
    counts = np.bincount(labels, minlength=data.num_classes)
    scanned = [int(c) for c in np.flatnonzero(counts >= MIN_CLASS_ROWS)]
    if not scanned:
        raise AdvlabError(f"every class of {data.name} has fewer than {MIN_CLASS_ROWS} images; an audit needs more")
    rows = np.flatnonzero(np.isin(labels, scanned))
    if method == "clustering":
        options = {"poison_fraction": poison_fraction} if poison_fraction is not None else {}
        result = detect(method, features[rows], labels[rows], classes=scanned, seed=seed, **options)
    else:
        options = {"max_k": max_k} if method == "spectre" else {}
        fraction = ESTIMATE_BOUND if poison_fraction is None else poison_fraction
        result = detect(method, features[rows], labels[rows], poison_fraction=fraction, classes=scanned, **options)
    scores, removed = np.zeros(len(labels)), np.zeros(len(labels), dtype=bool)
    scores[rows], removed[rows] = result.scores, result.removed
    per_class = {int(c): dict(v) for c, v in result.per_class.items()}
    budgets = {}
    for c in scanned:
        members = labels == c
        if poison_fraction is None and method != "clustering":
            removed[members] = outliers(scores[members])
            per_class[c].update(removed=int(removed[members].sum()), estimate=f"scores over {OUTLIER_Z:g} robust "
                                f"standard deviations above the median, at a bound of {ESTIMATE_BOUND:g}")
        budgets[c] = int(removed[members].sum()) if poison_fraction is None else int(round(poison_fraction
                                                                                           * counts[c]))
    projections = {}
    for c in scanned:
        members = np.flatnonzero(labels == c)
        projections[c] = pca_scores(features[members], min(6, len(members) - 1, features.shape[1]))
    name, _, _ = resolve_layer(model, layer)
    return Audit(method, name, describe_layer(model, layer), list(files), labels, list(data.classes), scores,
                 removed, budgets, poison_fraction is None, per_class, projections, time.perf_counter() - start)


def retrain_without(audit: Audit, data, test, config: TrainConfig, device: torch.device | str = "cpu",
                    progress: bool = False, use_cache: bool = True) -> tuple[nn.Module, dict, Path]:
    """Train config's recipe on `data` without the audit's removed files; returns (model, metadata,
    checkpoint) (metadata['test_accuracy'] is the clean accuracy on `test`)."""
    keep = torch.from_numpy(np.flatnonzero(~audit.removed))
    if len(keep) == len(data):
        raise AdvlabError("the audit removed no file; there is nothing to retrain without")
    kept = data.subset(keep, name=f"{data.name}-audited")
    model, meta, path, _ = train_model(config, torch.device(device), train_data=kept, test_data=test,
                                       progress=progress, use_cache=use_cache)
    return model, meta, path


def triggered_success(model: nn.Module, triggered, target: int, device: torch.device | str = "cpu",
                      batch_size: int | BatchSize = 500) -> float:
    """Share of the triggered images not of the target class (by their folder) predicted as target."""
    keep = torch.from_numpy(np.flatnonzero(triggered.labels.numpy() != target))
    if len(keep) == 0:
        raise AdvlabError("every triggered test image is of the target class; attack success needs others")
    predictions = predict_logits(model, triggered.subset(keep), device, batch_size).argmax(1)
    return float((predictions == target).float().mean())


def guess_target(audit: Audit, model: nn.Module | None = None, triggered=None, device="cpu",
                 batch_size: int | BatchSize = 500) -> int:
    """The backdoor's target class: the class with the most suspicious files (a backdoor's poisons
    carry the target's label); when none is suspicious, the class the triggered images (of other
    classes) are most often predicted as."""
    counts = np.bincount(audit.labels[audit.removed], minlength=len(audit.classes))
    if counts.sum() > 0:
        return int(counts.argmax())
    if model is None or triggered is None:
        raise AdvlabError("the audit found no suspicious file, so the target class is unknown; name it with --target")
    predictions = predict_logits(model, triggered, device, batch_size).argmax(1)
    wrong = predictions[predictions != triggered.labels]
    if len(wrong) == 0:
        return int(np.bincount(predictions.numpy()).argmax())
    return int(np.bincount(wrong.numpy()).argmax())


@dataclass
class FolderAudit:
    """What `audit_folder` found: the audit, the model audited, and clean accuracy and attack success
    before and (with retraining) after removing the suspicious files."""

    audit: Audit
    model_source: str
    train_config: dict | None
    before: dict
    after: dict | None = None
    target: str | None = None
    retrained_checkpoint: str | None = None

    def to_dict(self) -> dict:
        return {"audit": self.audit.to_dict(), "model": self.model_source, "train_config": self.train_config,
                "target": self.target, "before": self.before, "after": self.after,
                "retrained_checkpoint": self.retrained_checkpoint}



def audit_model(spec: str | None, options: SpecOptions | None, data, train_root, device,
                retrain: bool = False, epochs: int | None = None, seed: int = 0
                ) -> tuple[tuple[nn.Module, dict] | None, TrainConfig | None]:
    """The model an audit reads: (model, metadata) for any model spec (an advlab checkpoint, timm:NAME,
    a factory, TorchScript, ONNX), checked against the data, with the config to retrain it when its
    metadata has one; or no model and the config advlab trains on the folder (the recipe chosen from
    the data, or the architecture ``spec`` names)."""
    if spec is not None and spec_kind(spec) is not None:
        module, info = load_spec(spec, options, device, data.shape)
        meta = info.metadata()
        check_model_fits(meta, data, spec)
        config = None
        if retrain and meta.get("train_config"):
            config = default_config(f"folder:{train_root}", data=data, **{
                k: v for k, v in meta["train_config"].items() if k not in ("dataset", "data_recipe")})
        return (module, {**meta, "source": spec}), config
    if spec is not None:
        architecture(spec)  # unknown names fail here with the list of choices
    return None, default_config(f"folder:{train_root}", data=data, model=spec, epochs=epochs, seed=seed)


def audit_folder(data, test=None, model: tuple[nn.Module, dict] | None = None, config: TrainConfig | None = None,
                 method: str = "spectre", layer: str | None = PENULTIMATE, poison_fraction: float | None = None,
                 retrain: bool = False, triggered=None, target: str | int | None = None,
                 device: torch.device | str = "cpu", progress: bool = False, use_cache: bool = True,
                 report=print, batch_size: int | BatchSize = 256) -> FolderAudit:
    """The whole audit of a training folder (`advlab audit`): the user's model (model = (module,
    metadata)) or one advlab trains with `config` on the folder; the audit; optionally a model
    retrained with the same config without the suspicious files, and, with triggered test images
    (a data set labelled by true class), attack success before and after. test: the clean test
    set (clean accuracy; needed to train or retrain). batch_size: the model passes' (not training's),
    halved when a batch runs out of memory (advlab.runtime.BatchSize)."""
    batch = as_batch_size(batch_size)
    if (model is None or retrain) and test is None:
        raise AdvlabError("training or retraining needs clean test images to measure accuracy on: give --test "
                          "FOLDER, or a folder with train/ and test/ inside")
    if model is None and config is None:
        raise AdvlabError("audit_folder needs a model or a training config")
    # the layer is checked before any training: on the model given, or on the architecture to train
    resolve_layer(model[0] if model is not None else create_model(
        config.model, config.dataset, data.shape[0], data.shape[-1], data.num_classes, **config.model_extra), layer)
    if model is None:
        module, meta, path, cached = train_model(config, torch.device(device), train_data=data, test_data=test,
                                                 progress=progress, use_cache=use_cache)
        source = f"{config.model} trained by advlab on the folder ({'cached' if cached else 'trained'}: {path.name})"
        report(f"audit: {source}, clean accuracy {meta['test_accuracy']:.4f}")
    else:
        module, meta = model
        source = str(meta.get("source", meta.get("architecture", "the given model")))
    if triggered is not None and tuple(triggered.shape) != tuple(data.shape):
        raise AdvlabError(f"the triggered test images are read as {triggered.shape} but the training images as "
                          f"{data.shape}; give the same --image-size and --channels")
    audit = audit_dataset(module, data, method, layer, poison_fraction, device, batch, progress=progress)
    report(f"audit: {method} on the {audit.layer_description}: {int(audit.removed.sum())} of {len(audit.files)} "
           f"files suspicious ({'budget estimated' if audit.estimated else f'poison fraction <= {poison_fraction}'})")
    before: dict = {}
    if test is not None:
        before["clean_accuracy"] = float((predict_logits(module, test, device, batch).argmax(1) == test.labels)
                                         .float().mean())
    target_index = None
    if triggered is not None:
        target_index = data.class_index(target) if target is not None else guess_target(audit, module, triggered,
                                                                                              device, batch)
        before["attack_success"] = triggered_success(module, triggered, target_index, device, batch)
    result = FolderAudit(audit, source, config.to_dict() if config is not None else meta.get("train_config"),
                         before, target=None if target_index is None else data.classes[target_index])
    if retrain:
        if config is None:
            raise AdvlabError("--retrain needs the recipe to retrain with: audit a model advlab trains (no --model, "
                              "or an architecture name), or an advlab checkpoint that records its train_config")
        retrained, retrained_meta, path = retrain_without(audit, data, test, config, device, progress, use_cache)
        result.after = {"clean_accuracy": float(retrained_meta["test_accuracy"]),
                        "removed_files": int(audit.removed.sum())}
        if triggered is not None:
            result.after["attack_success"] = triggered_success(retrained, triggered, target_index, device, batch)
        result.retrained_checkpoint = str(path)
        report("audit: retrained without them: " + ", ".join(f"{k.replace('_', ' ')} {v:.4f}" if isinstance(v, float)
                                                             else f"{k.replace('_', ' ')} {v}"
                                                             for k, v in result.after.items()))
    return result



def _folder(path: str | Path, what: str) -> Path:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise AdvlabError(f"{what} {folder} {'is a file, not a folder' if folder.exists() else 'does not exist'}")
    return folder


def load_audit_folders(folder: str | Path, test: str | Path | None = None, triggered: str | Path | None = None,
                       class_map: dict[str, int] | None = None, **options):
    """(training data, clean test data or None, triggered test data or None, the training folder) of an
    audit: FOLDER/<class>/ (or FOLDER/train and FOLDER/test), an optional test folder of the same
    classes, and triggered images in subfolders named by their true class. options: load_image_folder's
    (image_size, channels, lazy, workers); the test sets are read at the training images' shape."""
    from advlab.data import load_image_folder

    root = _folder(folder, "the training folder")
    split = (root / "train").is_dir() and (root / "test").is_dir()
    train_root = root / "train" if split else root
    test_root = _folder(test, "--test") if test else (root / "test" if split else None)
    triggered_root = _folder(triggered, "--triggered-test") if triggered else None
    data = load_image_folder(train_root, class_map=class_map, name=f"{root.name}-audited", **options)
    options = {**options, "image_size": data.shape[-1], "channels": data.shape[0]}
    test_data = None
    if test_root is not None:
        labelled = {"class_map": class_map} if class_map else {"classes": data.classes}
        test_data = load_image_folder(test_root, name=f"{root.name}-test", **labelled, **options)
    triggered_data = None
    if triggered_root is not None:
        present = sorted(p.name for p in triggered_root.iterdir() if p.is_dir())
        unknown = [name for name in present if name not in data.classes]
        if unknown:
            raise AdvlabError(f"--triggered-test folder(s) {', '.join(unknown[:5])} are not classes of the training "
                              "folder; name the subfolders by their true class")
        triggered_data = load_image_folder(triggered_root, class_map={n: data.classes.index(n) for n in present},
                                           name="triggered", **options)
    return data, test_data, triggered_data, train_root


__all__ = ["Audit", "FolderAudit", "audit_dataset", "audit_folder", "guess_target", "load_audit_folders", "outliers",
           "retrain_without", "triggered_success"]
