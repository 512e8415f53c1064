"""Weights a user brings: a ``.safetensors`` file or a PyTorch state dict, read without unpickling
objects, then loaded into a module only when every key and shape fits."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from advlab.errors import AdvlabError

STATE_DICT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")  # what training scripts wrap them in


def _names(keys, limit: int = 4) -> str:
    keys = sorted(keys)
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file or of a ``.pt/.pth/.bin/.ckpt`` state dict, on the CPU.

    A pickled file is read with ``torch.load(weights_only=True)``: its unpickler builds only tensors
    and plain containers and refuses any other object before creating it, so a file that would run
    code when unpickled runs nothing here. A dict holding the state dict under a usual key
    (``state_dict``, ``model``, ...) is unwrapped, and the ``module.`` prefix DataParallel adds is dropped.
    """
    path = Path(path)
    if not path.is_file():
        raise AdvlabError(f"--weights {path} does not exist" + (" (it is a folder)" if path.is_dir() else ""))
    if path.suffix == ".safetensors":
        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise AdvlabError(f"--weights {path} is corrupt, truncated or not a safetensors file ({exc})") from None
    elif path.suffix in STATE_DICT_SUFFIXES:
        try:
            loaded = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            first = str(exc).strip().splitlines()
            reason = next((line for line in first if "Unsupported" in line or "global" in line.lower()),
                          first[0] if first else "")
            raise AdvlabError(f"--weights {path} holds Python objects other than tensors, which advlab never "
                              f"unpickles ({reason.strip()[:160]}); save model.state_dict() or a .safetensors "
                              "file") from None
        except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, AttributeError) as exc:
            text = str(exc).strip().splitlines()
            raise AdvlabError(f"--weights {path} is not a readable PyTorch state dict "
                              f"({(text[0] if text else type(exc).__name__)[:160]})") from None
        tensors = _unwrap(loaded, path)
    else:
        raise AdvlabError(f"--weights {path}: expected a .safetensors file or a state dict "
                          f"({', '.join(STATE_DICT_SUFFIXES)}), got {path.suffix or 'no suffix'}")
    if not tensors:
        raise AdvlabError(f"--weights {path} holds no tensors")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    bad = sorted(k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all())
    if bad:
        raise AdvlabError(f"--weights {path} holds NaN or infinite values ({_names(bad, 3)}); the file is corrupt "
                          "or came from a diverged run")
    return tensors


def _unwrap(loaded, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(loaded, dict) and not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        for key in WRAPPER_KEYS:
            inner = loaded.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return dict(inner)
    if not isinstance(loaded, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                               for k, v in loaded.items()):
        raise AdvlabError(f"--weights {path} is not a state dict (a mapping of names to tensors, as "
                          f"model.state_dict() gives; got {type(loaded).__name__})")
    return dict(loaded)


def load_weights(model: nn.Module, tensors: dict[str, torch.Tensor], source: str, what: str) -> None:
    """Load tensors into model, refusing (one line, naming the keys) any that are missing, unexpected
    or of another shape. ``what`` names the architecture in the message."""
    expected = model.state_dict()
    missing = set(expected) - set(tensors)
    unexpected = set(tensors) - set(expected)
    wrong = {k for k in set(expected) & set(tensors) if tuple(expected[k].shape) != tuple(tensors[k].shape)}
    # BatchNorm's counter is bookkeeping, not a weight: files often lack it
    missing = {k for k in missing if not k.endswith("num_batches_tracked")}
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {_names(missing)}")
        if unexpected:
            parts.append(f"unexpected {_names(unexpected)}")
        if wrong:
            k = sorted(wrong)[0]
            parts.append(f"wrong shape for {_names(wrong)} (e.g. {k}: file {tuple(tensors[k].shape)}, model "
                         f"{tuple(expected[k].shape)})")
        hint = ("; check --num-classes" if any(k in wrong for k in _head_keys(model)) else
                "; the weights come from another architecture")
        raise AdvlabError(f"--weights {source} do not fit {what} ({'; '.join(parts)}){hint}")
    model.load_state_dict(tensors, strict=False)


def _head_keys(model: nn.Module) -> set[str]:
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    return {f"{linears[-1]}.weight", f"{linears[-1]}.bias"} if linears else set()
