"""Checkpoints: weights in one safetensors file, metadata as JSON in its header. Never unpickled.

The metadata holds the architecture and its arguments, the data set, the training (or defense)
configuration, measured metrics and the advlab version. Loading rebuilds the architecture and
refuses weights that do not fit it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from advlab import __version__
from advlab.errors import AdvlabError
from advlab.models.registry import build_model
from advlab.runtime import atomic_write

META_KEY = "advlab"


def save_checkpoint(path: str | Path, model: nn.Module, meta: dict) -> Path:
    """Write model's weights and meta (must hold 'architecture' and 'model_args') atomically."""
    if "architecture" not in meta or "model_args" not in meta:
        raise ValueError("checkpoint metadata needs 'architecture' and 'model_args'")
    meta = {**meta, "advlab_version": __version__}
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    header = {META_KEY: json.dumps(meta, sort_keys=True)}
    return atomic_write(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=header))


def read_metadata(path: str | Path) -> dict:
    """The JSON metadata of a checkpoint, without loading its weights."""
    path = Path(path)
    if not path.is_file():
        raise AdvlabError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, UnicodeDecodeError) as exc:
        raise AdvlabError(f"{path} is corrupt, truncated or not a safetensors file ({exc})") from None
    try:
        meta = json.loads(header[META_KEY])
    except (KeyError, json.JSONDecodeError) as exc:
        raise AdvlabError(f"{path} is not an advlab checkpoint (no valid advlab metadata: {exc!r})") from None
    if not isinstance(meta, dict) or "architecture" not in meta or "model_args" not in meta:
        raise AdvlabError(f"{path}: checkpoint metadata lacks the architecture; it was not written by advlab")
    return meta


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model a checkpoint describes, load its weights, and return (model, metadata)."""
    meta = read_metadata(path)
    model = build_model(meta["architecture"], meta["model_args"])
    try:
        weights = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise AdvlabError(f"{path}: weights are corrupt or truncated ({exc})") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong = sorted(k for k in set(expected) & set(weights) if expected[k].shape != weights[k].shape)
    if missing or unexpected or wrong:
        detail = "; ".join(part for part in (
            f"missing {', '.join(missing[:3])}" if missing else "",
            f"unexpected {', '.join(unexpected[:3])}" if unexpected else "",
            f"wrong shape for {', '.join(wrong[:3])}" if wrong else "") if part)
        raise AdvlabError(f"{path}: weights do not match architecture {meta['architecture']!r} ({detail}); "
                          "the metadata and the weights come from different models")
    model.load_state_dict(weights)
    return model.to(device).eval(), meta
