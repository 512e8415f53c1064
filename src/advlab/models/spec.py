"""One resolver from a model spec to a plain ``nn.Module`` (images in [0, 1] to logits) and the
metadata every command needs.

Specs (``load_spec``):

- an advlab checkpoint (``.safetensors`` with advlab metadata);
- ``timm:NAME`` with ``weights`` (a ``.safetensors`` file or a state dict): normalization and input
  size from timm's pretrained config unless given;
- ``PATH.py:FUNCTION`` or ``package.module:FUNCTION``: the user's own code, called to build the
  module, then ``weights`` loaded into it;
- a TorchScript archive (``torch.jit.load``) or an ONNX file (converted to PyTorch operations);
- advlab architecture names are resolved one layer up (``advlab.training.resolve_model``), since
  they mean "train the default recipe".

``mean``/``std`` put advlab's ``Normalize`` in front of a model that expects normalized input; timm
models always get their config's. ``num_classes``, ``input_shape`` and ``class_names`` fill in what a
spec cannot tell; the number of classes is otherwise read from one forward pass.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from advlab.data import check_classes_fit
from advlab.errors import AdvlabError
from advlab.models.checkpoint import MAX_CHANNELS, MAX_CLASSES, MAX_SIZE, CheckpointMeta, load_model, validate_metadata
from advlab.models.layers import Normalize
from advlab.models.weights import load_weights, read_state_dict

SPEC_KINDS = ("advlab", "timm", "factory", "torchscript", "onnx")
TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".jit", ".zip", ".torchscript")
_FACTORY = re.compile(r"^(?P<target>.+):(?P<function>[A-Za-z_][A-Za-z0-9_]*)$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


@dataclass(frozen=True)
class SpecOptions:
    """What a spec cannot tell by itself (the command line's --weights, --mean, ... options)."""

    weights: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    num_classes: int | None = None
    input_shape: tuple[int, int, int] | None = None  # (C, H, W)
    class_names: str | None = None  # a file: one name per line

    def given(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class ModelInfo:
    """What the resolver found: the typed metadata every command reads."""

    spec: str
    kind: str  # one of SPEC_KINDS
    architecture: str
    input_shape: tuple[int, int, int]
    num_classes: int
    classes: list[str]
    mean: tuple[float, ...] | None  # the Normalize in front of the network, if any
    std: tuple[float, ...] | None
    parameters: int
    options: dict = field(default_factory=dict)
    checkpoint: CheckpointMeta | None = None  # for advlab checkpoints

    def metadata(self) -> dict:
        """The metadata dict the commands pass around: an advlab checkpoint's own, or the same fields
        for a foreign model (architecture "timm:resnet18", no data set, recipe or test accuracy)."""
        if self.checkpoint is not None:
            return self.checkpoint.raw
        channels, height, _ = self.input_shape
        return {"architecture": self.architecture, "spec_kind": self.kind, "spec": self.spec,
                "spec_options": self.options, "input_shape": list(self.input_shape), "classes": list(self.classes),
                "model_args": {"channels": channels, "size": height, "num_classes": self.num_classes,
                               "mean": None if self.mean is None else list(self.mean),
                               "std": None if self.std is None else list(self.std)},
                "dataset": None, "recipe": None, "test_accuracy": None, "parameters": self.parameters}


def model_metadata(meta: dict, source: str = "model") -> CheckpointMeta:
    """Typed metadata for either kind of metadata dict: an advlab checkpoint's (validated against
    the schema) or a resolved foreign model's (built by ModelInfo.metadata)."""
    kind = meta.get("spec_kind") if isinstance(meta, dict) else None
    if kind in (None, "advlab"):
        return validate_metadata(meta, source)
    args = meta["model_args"]
    shape = tuple(meta["input_shape"])
    return CheckpointMeta(architecture=meta["architecture"], kind="classifier", channels=shape[0], size=shape[1],
                          num_classes=args["num_classes"], model_args=dict(args), input_shape=shape,
                          classes=list(meta["classes"]), raw=meta)


def spec_kind(spec: str) -> str | None:
    """The kind of a spec from its text and, for files, their suffix and first bytes; None for a
    name that is none of them (an advlab architecture name, resolved by the caller)."""
    if spec.startswith("timm:"):
        return "timm"
    path = Path(spec)
    if path.suffix == ".safetensors":
        return "advlab"
    if path.suffix == ".onnx":
        return "onnx"
    if path.is_file():
        with open(path, "rb") as f:
            head = f.read(8)
        if head[:2] == b"PK":  # a zip archive: what torch.jit.save writes
            return "torchscript"
        if path.suffix in TORCHSCRIPT_SUFFIXES:
            return "torchscript"
        if head[:8] and head[:8] != b"\x93NUMPY":  # probably protobuf: an ONNX file with another suffix
            return "onnx" if path.suffix in ("", ".pb", ".model") else None
        return None
    match = _FACTORY.match(spec)
    if match and (match["target"].endswith(".py") or _MODULE.match(match["target"])):
        return "factory"
    if path.suffix in (".pt", ".pth", ".ts", ".jit"):
        return "torchscript"  # a missing file: load_spec says so
    return None


def load_spec(spec: str, options: SpecOptions | None = None, device: torch.device | str = "cpu",
              default_shape: tuple[int, int, int] | None = None) -> tuple[nn.Module, ModelInfo]:
    """Resolve a spec (see the module docstring) into (model in eval mode on device, ModelInfo).

    ``default_shape`` (C, H, W) is the input shape taken when neither the spec nor the options tell
    it (the command's data). A forward pass on two blank images checks that the model runs and
    gives the number of classes."""
    options = options or SpecOptions()
    kind = spec_kind(spec)
    if kind is None:
        raise AdvlabError(f"model {spec!r} is not an advlab architecture, checkpoint (.safetensors), timm:NAME, "
                          "PATH.py:FUNCTION, package.module:FUNCTION, TorchScript archive or .onnx file")
    _check_options(spec, kind, options)
    if kind == "advlab":
        return _advlab(spec, options, device)
    if kind == "timm":
        model, architecture, shape, mean, std = _timm(spec[len("timm:"):], options)
    elif kind == "factory":
        model, architecture = _factory(spec, options)
        shape, mean, std = options.input_shape or default_shape, options.mean, options.std
    elif kind == "torchscript":
        model, architecture = _torchscript(spec), f"torchscript:{Path(spec).name}"
        shape, mean, std = options.input_shape or default_shape, options.mean, options.std
    else:
        from advlab.models.onnx import load_onnx, onnx_input_shape

        model, architecture = load_onnx(spec), f"onnx:{Path(spec).name}"
        shape, mean, std = options.input_shape or onnx_input_shape(spec) or default_shape, options.mean, options.std
    if shape is None:
        raise AdvlabError(f"{spec} does not say what input it takes; pass --input-size (e.g. 3x224x224)")
    if mean is not None:
        if len(mean) != shape[0] and len(mean) == 1:
            mean, std = mean * shape[0], std * shape[0]
        if len(mean) != shape[0]:
            raise AdvlabError(f"--mean/--std give {len(mean)} values but the model takes {shape[0]} channel(s)")
        model = nn.Sequential(Normalize(tuple(mean), tuple(std)), model)
    model = model.to(device).eval()
    num_classes = _probe(model, spec, shape, device, options.num_classes)
    classes = _class_names(options.class_names, num_classes)
    parameters = sum(p.numel() for p in model.parameters())
    info = ModelInfo(spec=spec, kind=kind, architecture=architecture, input_shape=tuple(shape),
                     num_classes=num_classes, classes=classes, mean=None if mean is None else tuple(mean),
                     std=None if std is None else tuple(std), parameters=parameters,
                     options={k: (list(v) if isinstance(v, tuple) else v) for k, v in options.given().items()})
    return model, info


def _check_options(spec: str, kind: str, options: SpecOptions) -> None:
    if (options.mean is None) != (options.std is None):
        raise AdvlabError("--mean and --std go together: give both (one value, or one per channel)")
    if options.std is not None and not all(math.isfinite(s) and s > 0 for s in options.std):
        raise AdvlabError(f"--std must be positive, got {list(options.std)}")
    if options.mean is not None and len(options.mean) != len(options.std):
        raise AdvlabError(f"--mean has {len(options.mean)} values but --std {len(options.std)}")
    if options.weights is not None and kind not in ("timm", "factory"):
        raise AdvlabError(f"--weights applies to timm:NAME and factory specs; {spec} ({kind}) holds its own weights")
    if kind == "advlab":
        given = [f"--{k.replace('_', '-')}" for k in ("mean", "num_classes", "input_shape")
                 if getattr(options, k) is not None]
        if given:
            raise AdvlabError(f"{spec} is an advlab checkpoint, which records its normalization, input size and "
                              f"classes; drop {', '.join(given)}")


def _advlab(spec: str, options: SpecOptions, device) -> tuple[nn.Module, ModelInfo]:
    try:
        model, checkpoint = load_model(spec, device)
    except AdvlabError as exc:
        if "not an advlab checkpoint" in str(exc) or "not written by advlab" in str(exc):
            raise AdvlabError(f"{exc}; a plain state dict needs its architecture: timm:NAME --weights {spec} or "
                              f"PATH.py:FUNCTION --weights {spec}") from None
        raise
    if options.class_names:
        checkpoint = replace(checkpoint, classes=_class_names(options.class_names, checkpoint.num_classes),
                             raw={**checkpoint.raw,
                                  "classes": _class_names(options.class_names, checkpoint.num_classes)})
    args = checkpoint.model_args
    info = ModelInfo(spec=spec, kind="advlab", architecture=checkpoint.architecture,
                     input_shape=checkpoint.input_shape, num_classes=checkpoint.num_classes,
                     classes=checkpoint.classes, mean=tuple(args["mean"]), std=tuple(args["std"]),
                     parameters=sum(p.numel() for p in model.parameters()), checkpoint=checkpoint)
    return model, info


def import_timm():
    """timm, importable even where torchvision is absent (see advlab.models.torchvision_standin)."""
    try:
        import timm  # noqa: F401  (a real torchvision, or none needed)
        return timm
    except ModuleNotFoundError as exc:
        if exc.name is None or not exc.name.startswith("torchvision"):
            if exc.name == "timm":
                raise AdvlabError("timm:NAME needs timm: pip install timm (or, where no torchvision build fits your "
                                  "torch, pip install --no-deps timm; make setup does)") from None
            raise
    for name in [m for m in sys.modules if m == "timm" or m.startswith("timm.")]:
        del sys.modules[name]  # the half-imported package
    from advlab.models.torchvision_standin import install_standin

    install_standin()
    import timm

    return timm


def _timm(name: str, options: SpecOptions):
    timm = import_timm()
    if not name or not timm.is_model(name):
        close = timm.list_models(f"*{name[:6]}*")[:5] if name else []
        raise AdvlabError(f"unknown timm model {name!r}" + (f"; similar: {', '.join(close)}" if close else
                                                             "; see timm.list_models()"))
    tensors = read_state_dict(options.weights) if options.weights else None
    config = timm.get_pretrained_cfg(name)
    config = config.to_dict() if config is not None and hasattr(config, "to_dict") else dict(config or {})
    num_classes = options.num_classes or _classes_in(tensors, config) or config.get("num_classes") or 1000
    kwargs: dict = {"pretrained": False, "num_classes": num_classes}
    shape = options.input_shape or tuple(config.get("input_size") or (3, 224, 224))
    if shape[0] != 3:
        kwargs["in_chans"] = shape[0]
    model = None
    if options.input_shape is not None:
        try:  # models with a fixed grid (ViT) take the size; the others refuse the argument
            model = timm.create_model(name, img_size=tuple(shape[1:]), **kwargs)
        except TypeError:
            model = None
    if model is None:
        try:
            model = timm.create_model(name, **kwargs)
        except (TypeError, ValueError, RuntimeError, AssertionError) as exc:
            raise AdvlabError(f"timm cannot build {name} ({str(exc).splitlines()[0][:160]})") from None
    if tensors is not None:
        load_weights(model, tensors, options.weights, f"timm:{name} with {num_classes} classes")
    mean = options.mean or tuple(config.get("mean") or (0.485, 0.456, 0.406))
    std = options.std or tuple(config.get("std") or (0.229, 0.224, 0.225))
    if len(mean) != shape[0] and options.mean is None:
        mean, std = (sum(mean) / len(mean),) * shape[0], (sum(std) / len(std),) * shape[0]
    return model, f"timm:{name}", tuple(shape), tuple(mean), tuple(std)


def _classes_in(tensors: dict | None, config: dict) -> int | None:
    """The number of classes the weights' head was trained for (timm names its head in the config)."""
    if not tensors:
        return None
    heads = config.get("classifier") or "fc"
    for head in [heads] if isinstance(heads, str) else list(heads):
        weight = tensors.get(f"{head}.weight")
        if weight is not None and weight.dim() == 2:
            return int(weight.shape[0])
    return None


def _factory(spec: str, options: SpecOptions) -> tuple[nn.Module, str]:
    match = _FACTORY.match(spec)
    target, function = match["target"], match["function"]
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise AdvlabError(f"factory file {path} does not exist")
        module_name = f"advlab_user_factory_{abs(hash(str(path.resolve())))}"
        loader = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(loader)
        sys.path.insert(0, str(path.resolve().parent))  # so that it can import its neighbours
        try:
            loader.loader.exec_module(module)
        except Exception as exc:
            raise AdvlabError(f"{path} raised {type(exc).__name__} when imported: {_line(exc)}") from None
        finally:
            sys.path.remove(str(path.resolve().parent))
    else:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as exc:
            raise AdvlabError(f"cannot import {target} for factory {spec} ({_line(exc)})") from None
        except Exception as exc:
            raise AdvlabError(f"{target} raised {type(exc).__name__} when imported: {_line(exc)}") from None
    factory = getattr(module, function, None)
    if not callable(factory):
        raise AdvlabError(f"{target} has no function {function!r}")
    kwargs = {}
    if options.num_classes is not None:
        try:
            accepts = "num_classes" in inspect.signature(factory).parameters
        except (TypeError, ValueError):
            accepts = False
        if accepts:
            kwargs["num_classes"] = options.num_classes
    try:
        model = factory(**kwargs)
    except Exception as exc:
        raise AdvlabError(f"factory {spec} raised {type(exc).__name__}: {_line(exc)}") from None
    if not isinstance(model, nn.Module):
        raise AdvlabError(f"factory {spec} returned a {type(model).__name__}, not a torch.nn.Module")
    if options.weights:
        load_weights(model, read_state_dict(options.weights), options.weights, f"the module {spec} builds")
    return model, spec


def _torchscript(spec: str) -> nn.Module:
    path = Path(spec)
    if not path.is_file():
        raise AdvlabError(f"model file {path} does not exist")
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError, OSError) as exc:
        raise AdvlabError(f"{path} is not a TorchScript archive ({_line(exc)}); a state dict needs its architecture: "
                          f"timm:NAME --weights {path} or PATH.py:FUNCTION --weights {path}") from None


def _line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:200]


def _probe(model: nn.Module, spec: str, shape: tuple[int, int, int], device, num_classes: int | None) -> int:
    """Run two blank images through the model: it must give (2, K) finite logits."""
    channels, height, width = shape
    if not (1 <= channels <= MAX_CHANNELS and 1 <= height <= MAX_SIZE and 1 <= width <= MAX_SIZE):
        raise AdvlabError(f"input size {channels}x{height}x{width} is out of range")
    x = torch.full((2, channels, height, width), 0.5, device=device)
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as exc:
        raise AdvlabError(f"{spec} fails on a batch of 2 images of shape {channels}x{height}x{width} "
                          f"({type(exc).__name__}: {_line(exc)}); check --input-size (and, for ONNX, export with a "
                          "dynamic batch axis)") from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 2:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise AdvlabError(f"{spec} must return logits shaped (batch, classes); on 2 images it returned {got}")
    if not 1 <= out.shape[1] <= MAX_CLASSES:
        raise AdvlabError(f"{spec} returns {out.shape[1]} outputs per image; expected 1..{MAX_CLASSES} classes")
    if num_classes is not None and out.shape[1] != num_classes:
        raise AdvlabError(f"{spec} returns {out.shape[1]} logits per image but --num-classes is {num_classes}")
    return int(out.shape[1])


def _class_names(path: str | None, num_classes: int) -> list[str]:
    if path is None:
        return [str(k) for k in range(num_classes)]
    file = Path(path)
    if not file.is_file():
        raise AdvlabError(f"--class-names {path} does not exist")
    try:
        names = [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (UnicodeDecodeError, OSError) as exc:
        raise AdvlabError(f"--class-names {path} is not a readable text file ({exc})") from None
    if len(names) != num_classes:
        raise AdvlabError(f"--class-names {path} lists {len(names)} names but the model predicts {num_classes} "
                          "classes (one name per line)")
    if any(len(n) > 200 for n in names):
        raise AdvlabError(f"--class-names {path}: names must be at most 200 characters")
    return names


def check_model_fits(meta: dict, data, source: str) -> None:
    """Refuse a model that takes another image shape or predicts another number of classes than the
    data (an ImageDataset) has: caught before a long run, not after."""
    info = model_metadata(meta, source)
    if info.input_shape != data.shape:
        where = f" ({info.dataset})" if info.dataset else ""
        raise AdvlabError(f"{source} takes images of shape {info.input_shape}{where} but {data.name} images are "
                          f"{data.shape}; pass the matching --dataset (a folder: --image-size {info.input_shape[-1]} "
                          f"--channels {info.input_shape[0]})")
    if info.kind == "classifier":
        check_classes_fit(data, info.num_classes, source)  # a --class-map may map folders onto the model's classes


def info_from_metadata(meta: dict, model: nn.Module, spec: str) -> ModelInfo:
    """The ModelInfo of a model known by its metadata dict (e.g. one advlab trained on demand)."""
    typed = model_metadata(meta, spec)
    args = typed.model_args
    mean, std = args.get("mean"), args.get("std")
    foreign = meta.get("spec_kind") not in (None, "advlab")
    return ModelInfo(spec=spec, kind=meta.get("spec_kind") or "advlab", architecture=typed.architecture,
                     input_shape=typed.input_shape, num_classes=typed.num_classes, classes=typed.classes,
                     mean=None if mean is None else tuple(mean), std=None if std is None else tuple(std),
                     parameters=sum(p.numel() for p in model.parameters()),
                     options=meta.get("spec_options", {}) if foreign else {},
                     checkpoint=None if foreign else typed)
