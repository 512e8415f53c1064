"""Model specs that may mean "train it": an advlab architecture name is its data set's default recipe,
trained once and then taken from the cache; every other spec goes to ``advlab.models.load_spec``."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from advlab.data import ImageDataset
from advlab.errors import AdvlabError
from advlab.models import ARCHITECTURES, architecture
from advlab.models.spec import SpecOptions, load_spec, spec_kind
from advlab.training.cache import train_model
from advlab.training.trainer import default_config


def resolve_model(spec: str, device: torch.device | str = "cpu", options: SpecOptions | None = None,
                  dataset: str = "mnist", data: Callable[[str], ImageDataset] | None = None,
                  data_dir: str | None = None, progress: bool = True,
                  default_shape: tuple[int, int, int] | None = None) -> tuple[nn.Module, dict]:
    """(model, metadata dict) for any spec: an advlab architecture name trains (or reuses) the default
    recipe on ``dataset`` (its splits read by ``data(split)`` when given, so the model is trained on
    exactly the data the caller reads); anything else is resolved by load_spec."""
    if spec_kind(spec) is None and (spec in ARCHITECTURES or not any(c in spec for c in "/.:")):
        architecture(spec)  # unknown names fail here with the list of choices
        if options is not None and options.given():
            given = ", ".join(f"--{k.replace('_', '-')}" for k in options.given())
            raise AdvlabError(f"{spec} is an advlab architecture trained by advlab; {given} apply to foreign models")
        splits = {"train_data": data("train"), "test_data": data("test")} if data is not None else {}
        # a folder's recipe is chosen from its training data (channels, size, number of images)
        config = default_config(dataset, data=splits.get("train_data"), model=spec)
        model, meta, _, _ = train_model(config, device, data_dir, progress=progress, **splits)
        return model, meta
    model, info = load_spec(spec, options, device, default_shape)
    return model, info.metadata()
