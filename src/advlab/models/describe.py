"""What a resolved model is: the summary ``advlab inspect`` prints, with every named layer and the
shape of its output on one forward pass (the names ``--layer`` accepts)."""

from __future__ import annotations

import torch
from torch import nn

from advlab.models.spec import ModelInfo


def describe_model(model: nn.Module, info: ModelInfo, device: torch.device | str = "cpu") -> dict:
    """A JSON-ready summary: spec, architecture, parameters, input shape, normalization, classes,
    the output shape of a forward pass on two images, and each named layer's type and output shape."""
    shapes: dict[str, list[int] | str] = {}
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def hook(_module, _inputs, output, name=name):
            shapes[name] = list(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        handles.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.full((2, *info.input_shape), 0.5, device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    # containers that hold weights but never run (an ONNX graph's initializers) are no layers
    layers = [{"name": name, "type": type(module).__name__, "output": shapes.get(name, "not run"),
               "parameters": sum(p.numel() for p in module.parameters(recurse=False))}
              for name, module in model.named_modules()
              if name and (name in shapes or type(module) not in (nn.Module, nn.ParameterDict, nn.ModuleDict))]
    return {"spec": info.spec, "kind": info.kind, "architecture": info.architecture, "parameters": info.parameters,
            "input_shape": list(info.input_shape),
            "normalization": None if info.mean is None else {"mean": list(info.mean), "std": list(info.std)},
            "num_classes": info.num_classes, "classes": list(info.classes), "output_shape": list(out.shape),
            "layers": layers, "options": info.options}


def format_description(summary: dict, all_layers: bool = True) -> str:
    """The summary as the lines ``advlab inspect`` prints."""
    norm = summary["normalization"]
    classes = summary["classes"]
    shown = ", ".join(classes[:10]) + (f", ... ({len(classes)} in all)" if len(classes) > 10 else "")
    lines = [f"spec:          {summary['spec']} ({summary['kind']})",
             f"architecture:  {summary['architecture']}",
             f"parameters:    {summary['parameters']:,}",
             f"input:         {'x'.join(map(str, summary['input_shape']))} (C x H x W), pixels in [0, 1]",
             "normalization: " + ("none (the model takes [0, 1] pixels as they are)" if norm is None else
                                  f"mean {norm['mean']}, std {norm['std']} (a Normalize layer in front)"),
             f"classes:       {summary['num_classes']}: {shown}",
             f"forward pass:  2 images -> logits {summary['output_shape']}",
             "layers (--layer NAME; output shape on 2 images):"]
    layers = summary["layers"]
    if not all_layers and len(layers) > 60:
        layers = layers[:30] + [None] + layers[-30:]
    for layer in layers:
        if layer is None:
            lines.append(f"  ... ({len(summary['layers']) - 60} more; --all-layers lists them)")
            continue
        out = "x".join(map(str, layer["output"])) if isinstance(layer["output"], list) else layer["output"]
        lines.append(f"  {layer['name']:<40} {layer['type']:<22} {out}")
    return "\n".join(lines)
