"""The one exception type for user mistakes, and the input checks every layer shares.

A user mistake raises :class:`AdvlabError` with a message that says what to fix; the CLI turns it
into one line on stderr and a non-zero exit code. Anything else is a bug and may show a traceback.
"""

from __future__ import annotations

import torch


class AdvlabError(Exception):
    """A mistake in what the user asked for or supplied (names, shapes, files, ranges)."""


def check_images(x: torch.Tensor, name: str = "images", channels: int | None = None) -> None:
    """Refuse anything that is not a float NCHW batch in [0, 1] without NaNs."""
    if not isinstance(x, torch.Tensor):
        raise AdvlabError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise AdvlabError(
            f"{name} must be a batch shaped (N, C, H, W), got shape {tuple(x.shape)}"
            + ("; add a batch dimension with x.unsqueeze(0)" if x.dim() == 3 else "")
        )
    if not x.is_floating_point():
        raise AdvlabError(f"{name} must be float in [0, 1], got dtype {x.dtype}; divide uint8 by 255")
    if channels is not None and x.shape[1] != channels:
        raise AdvlabError(f"{name} must have {channels} channel(s), got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise AdvlabError(f"{name} is empty (shape {tuple(x.shape)})")
    if not torch.isfinite(x).all():
        raise AdvlabError(f"{name} contain NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise AdvlabError(
            f"{name} must lie in [0, 1] (pixel space, unnormalized), got range [{lo:.4g}, {hi:.4g}]"
        )


def check_labels(y: torch.Tensor, n: int, num_classes: int | None = None, name: str = "labels") -> None:
    """Refuse labels that are not a 1-D integer vector of length n within range."""
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.shape[0] != n:
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise AdvlabError(f"{name} must be a 1-D tensor of length {n}, got {shape}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise AdvlabError(f"{name} must be integer class indices, got dtype {y.dtype}")
    if num_classes is not None and y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise AdvlabError(f"{name} must lie in 0..{num_classes - 1}, got range [{int(y.min())}, {int(y.max())}]")


def check_range(value: float, name: str, lo: float, hi: float, *, lo_open: bool = False) -> float:
    """Check lo <= value <= hi (lo < value with lo_open), returning value as a float."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise AdvlabError(f"{name} must be a number, got {value!r}") from None
    if value != value or (value <= lo if lo_open else value < lo) or value > hi:
        bracket = "(" if lo_open else "["
        raise AdvlabError(f"{name} must be in {bracket}{lo:g}, {hi:g}], got {value:g}")
    return value
