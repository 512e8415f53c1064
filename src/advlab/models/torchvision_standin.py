"""An import-time stand-in for torchvision, so that timm can build models where torchvision is absent.

timm imports torchvision at module level (its data transforms, dataset factory and one frozen batch
norm layer) although building a model and running it needs none of it. torchvision is a compiled
package pinned to one exact torch release; where no build matches the installed torch (or none is
wanted), advlab installs timm without it and puts this stand-in in ``sys.modules`` just before
importing timm. It is used only when ``import torchvision`` itself fails: a real torchvision always
wins. The stand-in offers the one layer model code uses (``torchvision.ops.misc.FrozenBatchNorm2d``,
written here from its definition: batch norm with fixed statistics and affine parameters); every
other name is a placeholder whose use raises an error naming it, so nothing fails silently.
"""

from __future__ import annotations

import sys
import types

import torch
from torch import nn

STANDIN_FLAG = "__advlab_standin__"
_MODULES = ("torchvision", "torchvision.ops", "torchvision.ops.misc", "torchvision.transforms",
            "torchvision.transforms.functional", "torchvision.transforms.v2", "torchvision.datasets",
            "torchvision.utils", "torchvision.io")


class FrozenBatchNorm2d(nn.Module):
    """Batch normalization whose statistics and affine parameters are buffers (never trained):
    y = (x - running_mean) / sqrt(running_var + eps) * weight + bias."""

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.pop(prefix + "num_batches_tracked", None)  # written by nn.BatchNorm2d, not kept here
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class _Placeholder(type):
    """Metaclass of the placeholder names: attribute access yields further placeholders (enum members
    such as InterpolationMode.BILINEAR), instantiation raises."""

    _members: dict

    def __getattr__(cls, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        members = cls.__dict__.get("_members")
        if members is None:
            members = {}
            type.__setattr__(cls, "_members", members)
        if name not in members:
            members[name] = _placeholder(f"{cls.__qualname__}.{name}")
        return members[name]


def _placeholder(qualname: str) -> type:
    def refuse(self, *args, **kwargs):
        raise ModuleNotFoundError(f"{qualname} needs torchvision, which is not installed (advlab put a stand-in in "
                                  "its place so that timm can build models); install torchvision to use it")

    return _Placeholder(qualname.rsplit(".", 1)[-1], (), {"__init__": refuse, "__qualname__": qualname,
                                                         "__call__": refuse})


class _StandinModule(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        value = _placeholder(f"{self.__name__}.{name}")
        setattr(self, name, value)
        return value


def torchvision_available() -> bool:
    """Whether a real torchvision imports (the stand-in does not count)."""
    module = sys.modules.get("torchvision")
    if module is not None:
        return not getattr(module, STANDIN_FLAG, False)
    try:
        import torchvision  # noqa: F401
    except Exception:  # not installed, or a build that does not match this torch (fails on import)
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        return False
    return True


def install_standin() -> bool:
    """Put the stand-in in sys.modules unless a real torchvision imports; True when the stand-in is in use."""
    if torchvision_available():
        return False
    if "torchvision" in sys.modules:
        return True
    modules = {name: _StandinModule(name) for name in _MODULES}
    for name, module in modules.items():
        setattr(module, STANDIN_FLAG, True)
        module.__path__ = []  # a package, so that submodule imports resolve through sys.modules
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(modules[parent], child, module)
    modules["torchvision"].__version__ = "0.0.0+advlab-standin"
    modules["torchvision.ops.misc"].FrozenBatchNorm2d = FrozenBatchNorm2d
    sys.modules.update(modules)
    return True
