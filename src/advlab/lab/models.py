"""The models the lab offers: checkpoints and other model specs given at start, and those in advlab's
model cache.

Checkpoints are listed from their metadata only; weights are loaded on first use and kept. Other
specs (timm:NAME, PATH.py:FUNCTION, package.module:FUNCTION, TorchScript, ONNX; advlab.models.spec)
are resolved at start, with one set of SpecOptions (--weights, --mean, ...) for all of them, and take
their test images from the data set named for them (else uploads only). The
test set of a model's data set is loaded once per data set (MNIST from the copy inside the package
when nothing else is configured); a model whose data set cannot be found still takes uploads.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from advlab.data import ImageDataset, dataset_info, load_dataset
from advlab.errors import AdvlabError
from advlab.models import load_checkpoint
from advlab.models.checkpoint import read_metadata
from advlab.models.spec import SpecOptions, check_model_fits, load_spec, spec_kind
from advlab.runtime import cache_dir


@dataclass
class ModelEntry:
    """One checkpoint: a short id for the page, its metadata, and (once loaded) the model."""

    id: str
    path: Path
    meta: dict
    model: nn.Module | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def classes(self) -> list[str]:
        return list(self.meta.get("classes") or [str(k) for k in range(self.meta["model_args"]["num_classes"])])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        shape = self.meta.get("input_shape") or [self.meta["model_args"]["channels"], self.meta["model_args"]["size"],
                                                 self.meta["model_args"]["size"]]
        return tuple(int(s) for s in shape)

    @property
    def label(self) -> str:
        accuracy = self.meta.get("test_accuracy")
        recipe = (self.meta.get("recipe") or {}).get("method", "standard")
        acc = f", test accuracy {accuracy:.3f}" if isinstance(accuracy, float) else ""
        return f"{self.meta['architecture']} on {self.meta.get('dataset', '?')} ({recipe}{acc}) - {self.path.name}"

    def describe(self) -> dict:
        return {"id": self.id, "label": self.label, "architecture": self.meta["architecture"],
                "dataset": self.meta.get("dataset"), "classes": self.classes, "input_shape": list(self.input_shape),
                "path": str(self.path)}

    def load(self, device: torch.device) -> nn.Module:
        with self.lock:
            if self.model is None:
                self.model, _ = load_checkpoint(self.path, device)
            return self.model


def model_id(path: Path) -> str:
    return hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]


class ModelRegistry:
    """Checkpoints by id; the first one given is the default."""

    def __init__(self, paths: list[str | Path] = (), scan_cache: bool = True, device: torch.device | str = "cpu",
                 data_dir: str | None = None, options: SpecOptions | None = None, dataset: str | None = None) -> None:
        self.device = torch.device(device)
        self.data_dir = data_dir
        self.entries: dict[str, ModelEntry] = {}
        for path in paths:
            kind = spec_kind(str(path))
            if kind not in (None, "advlab"):
                self._add_spec(str(path), options, dataset)
            else:
                self._add(Path(path), strict=True)
        if scan_cache:
            for path in sorted((cache_dir() / "models").glob("*.safetensors")):
                self._add(path, strict=False)
        if not self.entries:
            raise AdvlabError("no model to serve: pass --model CHECKPOINT (or let `advlab lab` train the MNIST model)")
        self.default = next(iter(self.entries))
        self._test_sets: dict[str, ImageDataset | None] = {}
        self._data_lock = threading.Lock()

    def _add(self, path: Path, strict: bool) -> None:
        try:
            meta = read_metadata(path)
            if "num_classes" not in meta["model_args"] or meta.get("architecture", "").endswith("autoencoder"):
                raise AdvlabError(f"{path} is not a classifier")
        except AdvlabError:
            if strict:
                raise
            return  # a cache can hold autoencoders and half-written files of other runs: skip them
        entry = ModelEntry(model_id(path), path, meta)
        self.entries.setdefault(entry.id, entry)

    def _add_spec(self, spec: str, options: SpecOptions | None, dataset: str | None) -> None:
        """A foreign model spec, resolved now (a mismatch is an error before the lab starts); its test
        images come from `dataset` when given and of its shape."""
        shape = None
        if dataset and not dataset.startswith("folder:"):
            shape = dataset_info(dataset)[:3]
        module, info = load_spec(spec, options, self.device, shape)
        meta = {**info.metadata(), "dataset": dataset}
        if dataset:
            check_model_fits(meta, load_dataset(dataset, "test", self.data_dir), spec)
        entry = ModelEntry(model_id(Path(spec)), Path(spec), meta, model=module)
        self.entries.setdefault(entry.id, entry)

    def get(self, model: str | None) -> ModelEntry:
        key = model or self.default
        if key not in self.entries:
            raise AdvlabError(f"unknown model {key!r}; GET /api/info lists the models")
        return self.entries[key]

    def model(self, entry: ModelEntry) -> nn.Module:
        return entry.load(self.device)

    def test_set(self, entry: ModelEntry) -> ImageDataset | None:
        """The test split of the model's data set, or None when it cannot be found here."""
        name = entry.meta.get("dataset")
        with self._data_lock:
            if name not in self._test_sets:
                try:
                    data = load_dataset(name, "test", self.data_dir) if name else None
                except AdvlabError:
                    data = None
                if data is not None and tuple(data.shape) != entry.input_shape:
                    data = None
                self._test_sets[name] = data
            return self._test_sets[name]

    def describe(self) -> list[dict]:
        return [e.describe() for e in self.entries.values()]
