"""ONNX files as PyTorch modules, so that white-box attacks get gradients through a deployed graph.

The graph (read with the ``onnx`` package) becomes an ``nn.Module`` that runs its nodes in order
with PyTorch operations: every node is a submodule named after it (the names ``--layer`` accepts),
floating-point initializers become parameters, integer ones buffers. The operators covered are
those image classifiers export to (convolutions, matrix products, pooling, normalization,
activations, element-wise arithmetic and the shape plumbing around them), following the ONNX
operator specification; any other operator is refused, by name, before anything runs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from advlab.errors import AdvlabError

MAX_ONNX_BYTES = 4 * 2**30


def _attr(node, name: str, default=None):
    import onnx

    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return default


def _ints(value) -> list[int]:
    return [int(v) for v in value.flatten().tolist()] if isinstance(value, torch.Tensor) else list(value)


def _pads(pads: list[int] | None, dims: int) -> tuple[list[int], bool]:
    """ONNX pads (begin..., end...) as F.pad's (last dim first) list, and whether they are symmetric."""
    pads = list(pads or [0] * (2 * dims))
    begin, end = pads[:dims], pads[dims:]
    torch_pads: list[int] = []
    for b, e in zip(reversed(begin), reversed(end), strict=True):
        torch_pads += [b, e]
    return torch_pads, begin == end


def _auto_pad(node) -> None:
    mode = _attr(node, "auto_pad", b"NOTSET")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode not in ("NOTSET", "VALID"):
        raise AdvlabError(f"ONNX node {node.name or node.op_type}: auto_pad={mode} is not supported; export with "
                          "explicit pads (torch.onnx.export does)")


def _conv(node) -> Callable:
    _auto_pad(node)
    group = _attr(node, "group", 1)
    strides, dilations = _attr(node, "strides"), _attr(node, "dilations")

    def run(x, w, b=None):
        dims = w.dim() - 2
        pads, symmetric = _pads(_attr(node, "pads"), dims)
        conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[dims]
        padding = pads[::2][::-1] if symmetric else 0
        if not symmetric:
            x = F.pad(x, pads)
        return conv(x, w, b, list(strides or [1] * dims), padding, list(dilations or [1] * dims), group)
    return run


def _pool(node, kind: str) -> Callable:
    _auto_pad(node)
    kernel = list(_attr(node, "kernel_shape"))
    strides = list(_attr(node, "strides") or [1] * len(kernel))
    ceil = bool(_attr(node, "ceil_mode", 0))
    dilations = list(_attr(node, "dilations") or [1] * len(kernel))
    include_pad = bool(_attr(node, "count_include_pad", 0))
    pads, symmetric = _pads(_attr(node, "pads"), len(kernel))
    padding = pads[::2][::-1] if symmetric else [0] * len(kernel)

    def run(x):
        if not symmetric:
            x = F.pad(x, pads, value=-math.inf if kind == "max" else 0.0)
        if kind == "max":
            pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[len(kernel)]
            return pool(x, kernel, strides, padding, dilations, ceil_mode=ceil)
        if any(d != 1 for d in dilations):
            raise AdvlabError(f"ONNX node {node.name or node.op_type}: dilated AveragePool is not supported")
        pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[len(kernel)]
        return pool(x, kernel, strides, padding, ceil_mode=ceil, count_include_pad=include_pad)
    return run


def _gemm(node) -> Callable:
    alpha, beta = _attr(node, "alpha", 1.0), _attr(node, "beta", 1.0)
    trans_a, trans_b = _attr(node, "transA", 0), _attr(node, "transB", 0)

    def run(a, b, c=None):
        a = a.t() if trans_a else a
        b = b.t() if trans_b else b
        out = a @ b
        out = out * alpha if alpha != 1.0 else out
        return out if c is None else out + (c * beta if beta != 1.0 else c)
    return run


def _batch_norm(node) -> Callable:
    eps = _attr(node, "epsilon", 1e-5)

    def run(x, scale, bias, mean, var):
        return F.batch_norm(x, mean, var, scale, bias, training=False, eps=eps)
    return run


def _softmax(node, log: bool = False) -> Callable:
    axis = _attr(node, "axis", -1)
    return lambda x: (F.log_softmax if log else F.softmax)(x, dim=axis)


def _flatten(node) -> Callable:
    axis = _attr(node, "axis", 1)

    def run(x):
        cut = axis if axis >= 0 else x.dim() + axis
        return x.reshape(int(math.prod(x.shape[:cut])), -1)
    return run


def _reshape(node) -> Callable:
    allow_zero = _attr(node, "allowzero", 0)

    def run(x, shape):
        shape = _ints(shape)
        if not allow_zero:
            shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
        return x.reshape(shape)
    return run


def _axes(node, given) -> list[int] | None:
    axes = _attr(node, "axes")
    if axes is None and given is not None:
        axes = _ints(given)
    return None if axes is None else list(axes)


def _unsqueeze(node) -> Callable:
    def run(x, axes=None):
        out = x
        axes = _axes(node, axes)
        rank = x.dim() + len(axes)
        for axis in sorted(a % rank for a in axes):
            out = out.unsqueeze(axis)
        return out
    return run


def _squeeze(node) -> Callable:
    def run(x, axes=None):
        axes = _axes(node, axes)
        if axes is None:
            return x.squeeze()
        return x.squeeze(tuple(a % x.dim() for a in axes))
    return run


def _reduce(node, fn: str) -> Callable:
    keep = bool(_attr(node, "keepdims", 1))

    def run(x, axes=None):
        axes = _axes(node, axes)
        if not axes:
            axes = list(range(x.dim())) if not _attr(node, "noop_with_empty_axes", 0) else []
            if not axes:
                return x
        return getattr(torch, fn)(x, dim=tuple(axes), keepdim=keep)
    return run


def _clip(node) -> Callable:
    lo_attr, hi_attr = _attr(node, "min"), _attr(node, "max")

    def run(x, lo=None, hi=None):
        lo = lo if lo is not None else lo_attr
        hi = hi if hi is not None else hi_attr
        return torch.clamp(x, min=lo, max=hi)
    return run


def _gather(node) -> Callable:
    axis = _attr(node, "axis", 0)

    def run(x, index):
        index = index.long()
        dim = axis % x.dim()
        out = torch.index_select(x, dim, index.flatten())
        return out.reshape((*x.shape[:dim], *index.shape, *x.shape[dim + 1:]))
    return run


def _slice(node) -> Callable:
    def run(x, starts, ends, axes=None, steps=None):
        starts, ends = _ints(starts), _ints(ends)
        axes = _ints(axes) if axes is not None else list(range(len(starts)))
        steps = _ints(steps) if steps is not None else [1] * len(starts)
        index = [slice(None)] * x.dim()
        for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
            if step != 1:
                raise AdvlabError(f"ONNX node {node.name or 'Slice'}: Slice with step {step} is not supported")
            size = x.shape[axis]
            index[axis] = slice(max(min(start, size), -size), max(min(end, size), -size - 1))
        return x[tuple(index)]
    return run


def _pad(node) -> Callable:
    mode = _attr(node, "mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode

    def run(x, pads, value=None, axes=None):
        if axes is not None:
            raise AdvlabError(f"ONNX node {node.name or 'Pad'}: Pad with axes is not supported")
        pads, _ = _pads(_ints(pads), x.dim())
        if mode == "constant":
            return F.pad(x, pads, value=float(value) if value is not None and value.numel() else 0.0)
        return F.pad(x, pads, mode={"reflect": "reflect", "edge": "replicate"}[mode])
    return run


def _cast(node) -> Callable:
    import onnx

    dtype = onnx.helper.tensor_dtype_to_np_dtype(_attr(node, "to"))
    target = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "int64": torch.int64,
              "int32": torch.int32, "bool": torch.bool}.get(str(dtype))
    if target is None:
        raise AdvlabError(f"ONNX node {node.name or 'Cast'}: Cast to {dtype} is not supported")
    return lambda x: x.to(target)


def _constant(node) -> Callable:
    import onnx

    attribute = node.attribute[0]
    value = onnx.helper.get_attribute_value(attribute)
    if attribute.name == "value":
        tensor = torch.from_numpy(onnx.numpy_helper.to_array(value).copy())
    elif attribute.name in ("value_float", "value_int"):
        tensor = torch.tensor(value)
    elif attribute.name in ("value_floats", "value_ints"):
        tensor = torch.tensor(list(value))
    else:
        raise AdvlabError(f"ONNX node {node.name or 'Constant'}: Constant {attribute.name} is not supported")
    return lambda: tensor


def _concat(node) -> Callable:
    axis = _attr(node, "axis")
    return lambda *xs: torch.cat([x for x in xs if x.numel() or x.dim() > 1], dim=axis)


def _transpose(node) -> Callable:
    perm = _attr(node, "perm")
    return lambda x: x.permute(*(perm if perm is not None else reversed(range(x.dim()))))


def _gelu(node) -> Callable:
    approximate = _attr(node, "approximate", b"none")
    approximate = approximate.decode() if isinstance(approximate, bytes) else approximate
    return lambda x: F.gelu(x, approximate=approximate)


def _leaky(node) -> Callable:
    slope = _attr(node, "alpha", 0.01)
    return lambda x: F.leaky_relu(x, slope)


def _layer_norm(node) -> Callable:
    axis, eps = _attr(node, "axis", -1), _attr(node, "epsilon", 1e-5)

    def run(x, scale, bias=None):
        cut = axis % x.dim()
        return F.layer_norm(x, x.shape[cut:], scale, bias, eps)
    return run


def _split(node) -> Callable:
    axis = _attr(node, "axis", 0)
    outputs = len(node.output)

    def run(x, split=None):
        sizes = _ints(split) if split is not None else _attr(node, "split")
        if sizes is None:
            sizes = [x.shape[axis] // outputs] * outputs
        return tuple(torch.split(x, list(sizes), dim=axis))
    return run


def _expand(node) -> Callable:
    return lambda x, shape: x.expand(torch.broadcast_shapes(tuple(x.shape), tuple(_ints(shape))))


def _constant_of_shape(node) -> Callable:
    import onnx

    value = _attr(node, "value")
    fill = torch.from_numpy(onnx.numpy_helper.to_array(value).copy()) if value is not None else torch.zeros(1)
    return lambda shape: torch.full(tuple(_ints(shape)), fill.item(), dtype=fill.dtype)


def _tile(node) -> Callable:
    return lambda x, repeats: x.repeat(*_ints(repeats))


def _range(node) -> Callable:
    return lambda start, limit, delta: torch.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype)


def _dropout(node) -> Callable:
    return lambda x, *_: x  # inference: the identity (its mask output is never used by a classifier)


def _shape(node) -> Callable:
    start, end = _attr(node, "start", 0), _attr(node, "end")
    return lambda x: torch.tensor(list(x.shape)[start:end], dtype=torch.int64)


def _simple(fn: Callable) -> Callable[[object], Callable]:
    return lambda node: fn


OPERATORS: dict[str, Callable[[object], Callable]] = {
    "Conv": _conv, "Gemm": _gemm, "MatMul": _simple(torch.matmul),
    "Add": _simple(torch.add), "Sub": _simple(torch.sub), "Mul": _simple(torch.mul), "Div": _simple(torch.div),
    "Pow": _simple(torch.pow), "Neg": _simple(torch.neg), "Sqrt": _simple(torch.sqrt), "Exp": _simple(torch.exp),
    "Log": _simple(torch.log), "Abs": _simple(torch.abs), "Erf": _simple(torch.erf), "Reciprocal":
    _simple(torch.reciprocal), "Max": _simple(lambda *xs: torch.stack(torch.broadcast_tensors(*xs)).amax(0)),
    "Min": _simple(lambda *xs: torch.stack(torch.broadcast_tensors(*xs)).amin(0)),
    "Relu": _simple(F.relu), "LeakyRelu": _leaky, "Sigmoid": _simple(torch.sigmoid), "Tanh": _simple(torch.tanh),
    "Gelu": _gelu, "HardSigmoid": _simple(lambda x: torch.clamp(x / 6 + 0.5, 0, 1)),
    "HardSwish": _simple(F.hardswish), "Softplus": _simple(F.softplus), "Clip": _clip,
    "Softmax": _softmax, "LogSoftmax": lambda node: _softmax(node, log=True),
    "MaxPool": lambda node: _pool(node, "max"), "AveragePool": lambda node: _pool(node, "avg"),
    "GlobalAveragePool": _simple(lambda x: x.mean(dim=tuple(range(2, x.dim())), keepdim=True)),
    "GlobalMaxPool": _simple(lambda x: x.amax(dim=tuple(range(2, x.dim())), keepdim=True)),
    "BatchNormalization": _batch_norm, "LayerNormalization": _layer_norm,
    "Flatten": _flatten, "Reshape": _reshape, "Transpose": _transpose, "Concat": _concat,
    "Unsqueeze": _unsqueeze, "Squeeze": _squeeze, "Gather": _gather, "Slice": _slice, "Shape": _shape,
    "Split": _split, "Expand": _expand, "Pad": _pad, "Cast": _cast,
    "ReduceMean": lambda node: _reduce(node, "mean"), "ReduceSum": lambda node: _reduce(node, "sum"),
    "ReduceMax": lambda node: _reduce(node, "amax"),
    "Constant": _constant, "Identity": _simple(lambda x: x), "Dropout": _dropout,
    "ConstantOfShape": _constant_of_shape, "Tile": _tile, "Range": _range,
    "Equal": _simple(torch.eq), "Less": _simple(torch.lt), "Greater": _simple(torch.gt),
    "LessOrEqual": _simple(torch.le), "GreaterOrEqual": _simple(torch.ge), "Not": _simple(torch.logical_not),
    "And": _simple(torch.logical_and), "Or": _simple(torch.logical_or), "Where": _simple(torch.where),
    "Sin": _simple(torch.sin), "Cos": _simple(torch.cos),
}


class OnnxNode(nn.Module):
    """One ONNX node: its operator applied to the values it names (a module, so hooks can read it)."""

    def __init__(self, op_type: str, onnx_name: str, fn: Callable) -> None:
        super().__init__()
        self.op_type, self.onnx_name, self.fn = op_type, onnx_name, fn

    def forward(self, *inputs):
        return self.fn(*inputs)

    def extra_repr(self) -> str:
        return f"{self.op_type} {self.onnx_name!r}"


class OnnxModel(nn.Module):
    """An ONNX graph run with PyTorch operations (eval mode only; training-time behaviour of dropout
    and batch norm is not part of an exported inference graph)."""

    def __init__(self, graph, initializers: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.weights = nn.ParameterDict()
        self.constants = nn.Module()
        self._values: dict[str, tuple[str, str]] = {}  # ONNX value name -> (container, attribute)
        for i, (name, tensor) in enumerate(initializers.items()):
            key = f"w{i}"
            if tensor.is_floating_point():
                self.weights[key] = nn.Parameter(tensor, requires_grad=False)
                self._values[name] = ("weights", key)
            else:
                self.constants.register_buffer(key, tensor)
                self._values[name] = ("constants", key)
        feeds = [i.name for i in graph.input if i.name not in initializers]
        if len(feeds) != 1:
            raise AdvlabError(f"the ONNX graph takes {len(feeds)} inputs ({', '.join(feeds)}); a classifier takes one "
                              "image batch")
        self.input_name = feeds[0]
        self.output_name = graph.output[0].name
        self.nodes = nn.ModuleDict()
        self._wiring: list[tuple[str, list[str], list[str]]] = []
        used: set[str] = set()
        for index, node in enumerate(graph.node):
            key = _module_name(node.name or f"{node.op_type}_{index}", used)
            self.nodes[key] = OnnxNode(node.op_type, node.name, OPERATORS[node.op_type](node))
            self._wiring.append((key, list(node.input), list(node.output)))

    def _initial(self, name: str) -> torch.Tensor:
        container, key = self._values[name]
        return self.weights[key] if container == "weights" else getattr(self.constants, key)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values: dict[str, torch.Tensor] = {self.input_name: x}
        for key, inputs, outputs in self._wiring:
            args = []
            for name in inputs:
                if name == "":
                    args.append(None)  # an optional input left out
                elif name in values:
                    args.append(values[name])
                else:
                    args.append(self._initial(name))
            while args and args[-1] is None:
                args.pop()
            result = self.nodes[key](*args)
            if isinstance(result, tuple):
                values.update(zip(outputs, result, strict=False))
            else:
                values[outputs[0]] = result
        return values[self.output_name]


def _module_name(name: str, used: set[str]) -> str:
    """A submodule name from an ONNX node name ('/features/conv1/Conv' -> 'features.conv1.Conv' is not
    allowed in a ModuleDict key, so dots and slashes become underscores)."""
    base = re.sub(r"[^0-9A-Za-z_]+", "_", name).strip("_") or "node"
    key, n = base, 1
    while key in used:
        n += 1
        key = f"{base}_{n}"
    used.add(key)
    return key


def onnx_input_shape(path: str | Path) -> tuple[int, ...] | None:
    """The (C, H, W) the graph's image input declares, when its dimensions are fixed numbers."""
    graph = _load(Path(path)).graph
    names = {i.name for i in graph.initializer}
    for value in graph.input:
        if value.name in names:
            continue
        dims = value.type.tensor_type.shape.dim
        sizes = [d.dim_value if d.HasField("dim_value") else None for d in dims]
        if len(sizes) == 4 and all(s for s in sizes[1:]):
            return tuple(sizes[1:])
        return None
    return None


def _load(path: Path):
    try:
        import onnx
    except ImportError:
        raise AdvlabError("reading ONNX files needs the onnx package: pip install onnx (or advlab[onnx])") from None
    if not path.is_file():
        raise AdvlabError(f"ONNX file {path} does not exist")
    if path.stat().st_size > MAX_ONNX_BYTES:
        raise AdvlabError(f"{path} is larger than {MAX_ONNX_BYTES // 2**30} GiB")
    try:
        model = onnx.load(str(path), load_external_data=True)
    except Exception as exc:  # protobuf's DecodeError, missing external data files, ...: all mean a bad file
        text = str(exc).strip().splitlines()
        raise AdvlabError(f"{path} is not a readable ONNX model ({(text[0] if text else type(exc).__name__)[:160]})") \
            from None
    return model


def load_onnx(path: str | Path) -> nn.Module:
    """The ONNX file at path as an ``nn.Module`` (eval mode, gradients flowing to the input)."""
    import onnx.numpy_helper

    path = Path(path)
    model = _load(path)
    graph = model.graph
    for opset in model.opset_import:
        if opset.domain not in ("", "ai.onnx"):
            raise AdvlabError(f"{path} uses operators of the custom domain {opset.domain!r}, which advlab cannot run")
    unsupported = sorted({n.op_type for n in graph.node if n.op_type not in OPERATORS})
    if unsupported:
        first = next(n for n in graph.node if n.op_type == unsupported[0])
        raise AdvlabError(f"{path}: ONNX operator {', '.join(unsupported)} is not supported by advlab's converter "
                          f"(first at node {first.name or '?'}); supported: {', '.join(sorted(OPERATORS))}")
    try:
        initializers = {t.name: torch.from_numpy(onnx.numpy_helper.to_array(t).copy()) for t in graph.initializer}
    except (ValueError, TypeError) as exc:
        raise AdvlabError(f"{path}: an initializer cannot be read ({exc})") from None
    return OnnxModel(graph, initializers).eval()
