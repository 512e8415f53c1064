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
from advlab.runtime import eval_mode

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
                     batch_size: int = 500, device: torch.device | str = "cpu", progress: bool = False) -> np.ndarray:
    """(N, D) float64 representations of images (an ImageDataset or a float [0, 1] NCHW tensor) at
    `layer`, the model in eval mode (no augmentation, frozen batch-norm statistics)."""
    _, module, on_input = resolve_layer(model, layer)
    captured: list[torch.Tensor] = []

    def hook(_module, inputs, output):
        value = inputs[0] if on_input else output
        captured.append(value.detach().flatten(1).to("cpu", torch.float64))

    if isinstance(images, ImageDataset):
        batches = (x for x, _ in images.batches(batch_size, device=device))
        total = (len(images) + batch_size - 1) // batch_size
    else:
        batches = (images[i:i + batch_size].to(device) for i in range(0, len(images), batch_size))
        total = (len(images) + batch_size - 1) // batch_size
    handle = module.register_forward_hook(hook)
    try:
        with eval_mode(model):
            for x in tqdm(batches, total=total, desc="representations", disable=not progress, leave=False):
                model(x)
    finally:
        handle.remove()
    if not captured:
        raise AdvlabError("no images to extract representations from")
    return torch.cat(captured).numpy()
