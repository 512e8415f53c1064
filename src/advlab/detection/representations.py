"""Representations of images at any named layer of a model, for the detectors.

A forward hook records the chosen module's output (or, for the default "penultimate", the input of
the model's last linear layer: what the classifier head sees), flattened over ALL channels and
positions (a peer toolkit once kept only the first channel) and returned in float64, since the
covariance work downstream needs the precision. Results depend on the layer: record which one.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from advlab.data import ImageDataset
from advlab.errors import AdvlabError
from advlab.runtime import BatchSize, as_batch_size, eval_mode

PENULTIMATE = "penultimate"


def layer_names(model: nn.Module) -> list[str]:
    """Every named submodule, in registration order (the names --layer accepts)."""
    return [name for name, _ in model.named_modules() if name]


def last_linear_name(model: nn.Module) -> str:
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise AdvlabError("the model has no nn.Linear layer, so 'penultimate' is undefined; name a layer "
                          f"(one of: {', '.join(layer_names(model))})")
    return names[-1]


def resolve_layer(model: nn.Module, layer: str | None) -> tuple[str, nn.Module, bool]:
    """(name, module, hook on its input?) for a layer name, or 'penultimate' / None."""
    modules = dict(model.named_modules())
    if layer in (None, PENULTIMATE):
        name = last_linear_name(model)
        return name, modules[name], True
    if layer not in modules or layer == "":
        raise AdvlabError(f"unknown layer {layer!r}; choose 'penultimate' or one of: {', '.join(layer_names(model))}")
    return layer, modules[layer], False


def describe_layer(model: nn.Module, layer: str | None) -> str:
    name, module, on_input = resolve_layer(model, layer)
    kind = type(module).__name__
    return f"input of {name} ({kind}, the penultimate representation)" if on_input else f"output of {name} ({kind})"


@torch.no_grad()
def extract_features(model: nn.Module, images: ImageDataset | torch.Tensor, layer: str | None = PENULTIMATE,
                     batch_size: int | BatchSize = 500, device: torch.device | str = "cpu",
                     progress: bool = False) -> np.ndarray:
    """(N, D) float64 representations of images (a data set, in memory or lazy, or a float [0, 1] NCHW tensor) at
    `layer`, the model in eval mode (no augmentation, frozen batch-norm statistics). A forward pass that runs
    out of memory is retried at half the batch (advlab.runtime.BatchSize)."""
    _, module, on_input = resolve_layer(model, layer)
    batch = as_batch_size(batch_size)
    loaded_size = batch.size  # the loader's batches; the model's passes may split them
    sink: list[list[torch.Tensor]] = [[]]

    def hook(_module, inputs, output):
        value = inputs[0] if on_input else output
        sink[0].append(value.detach().flatten(1).to("cpu", torch.float64))

    def one(xb: torch.Tensor, s: slice) -> torch.Tensor:
        sink[0] = []  # a pass that ran out of memory after the layer leaves nothing behind
        model(xb[s])
        return torch.cat(sink[0])

    if not isinstance(images, torch.Tensor):  # an ImageDataset, or a folder read lazily: its own batches
        batches = (x for x, _ in images.batches(loaded_size, device=device))
    else:
        batches = (images[i:i + loaded_size].to(device) for i in range(0, len(images), loaded_size))
    total = (len(images) + loaded_size - 1) // loaded_size
    captured: list[torch.Tensor] = []
    handle = module.register_forward_hook(hook)
    try:
        with eval_mode(model):
            for x in tqdm(batches, total=total, desc="representations", disable=not progress, leave=False):
                captured += batch.map(lambda s, x=x: one(x, s), len(x))
    finally:
        handle.remove()
    if not captured:
        raise AdvlabError("no images to extract representations from")
    return torch.cat(captured).numpy()
