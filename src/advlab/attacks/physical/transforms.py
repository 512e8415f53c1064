"""A differentiable distribution of the transformations a printed-then-photographed image goes through.

Expectation over Transformation (Athalye et al. 2018, eq. 1) needs to sample t ~ T and back-propagate
through t(x). Each image of a batch gets its own draw of: a homography (rotation, scale, translation
and a perspective jitter of the four corners, as a hand-held camera gives), contrast and brightness,
a Gaussian blur (focus), additive sensor noise and, with some probability, a differentiable JPEG
approximation (kornia's jpeg_codec_differentiable, Reich et al. 2024). All of it is kornia/PyTorch,
so gradients flow to the input; outputs are clipped to [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from kornia.enhance import jpeg_codec_differentiable
from kornia.filters import gaussian_blur2d
from kornia.geometry.transform import get_perspective_transform, warp_perspective

from advlab.errors import AdvlabError, check_images, check_range


@dataclass(frozen=True)
class PrintPhotoTransforms:
    """Ranges of each transformation; every parameter is drawn uniformly per image.

    rotation: max |angle| in degrees; scale: (lo, hi) zoom; translation: max shift as a fraction of
    the side; perspective: max corner jitter as a fraction of the side; contrast: (lo, hi) factor
    about grey 0.5; brightness: max |additive shift|; blur: max Gaussian sigma in pixels; noise: max
    standard deviation of additive Gaussian noise; jpeg: (lo, hi) quality, applied with probability
    jpeg_probability (None: never).
    """

    rotation: float = 10.0
    scale: tuple[float, float] = (0.9, 1.1)
    translation: float = 0.06
    perspective: float = 0.04
    contrast: tuple[float, float] = (0.8, 1.2)
    brightness: float = 0.1
    blur: float = 1.0
    noise: float = 0.03
    jpeg: tuple[float, float] | None = (50.0, 90.0)
    jpeg_probability: float = 0.5

    def __post_init__(self) -> None:
        check_range(self.rotation, "rotation (degrees)", 0.0, 180.0)
        check_range(self.translation, "translation", 0.0, 0.5)
        check_range(self.perspective, "perspective", 0.0, 0.25)
        check_range(self.brightness, "brightness", 0.0, 1.0)
        check_range(self.blur, "blur sigma", 0.0, 10.0)
        check_range(self.noise, "noise", 0.0, 1.0)
        check_range(self.jpeg_probability, "jpeg probability", 0.0, 1.0)
        for name, (lo, hi) in (("scale", self.scale), ("contrast", self.contrast)):
            if not 0 < lo <= hi:
                raise AdvlabError(f"{name} range must be 0 < lo <= hi, got ({lo}, {hi})")
        if self.jpeg is not None and not 1 <= self.jpeg[0] <= self.jpeg[1] <= 100:
            raise AdvlabError(f"jpeg quality range must lie in [1, 100] with lo <= hi, got {self.jpeg}")

    @classmethod
    def identity(cls) -> PrintPhotoTransforms:
        """No transformation at all: EOT with it is plain PGD."""
        return cls(0.0, (1.0, 1.0), 0.0, 0.0, (1.0, 1.0), 0.0, 0.0, 0.0, None, 0.0)

    def to_dict(self) -> dict:
        return asdict(self)

    def sample(self, n: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Draw n parameter sets (on the CPU; apply moves them to the images' device)."""
        def uniform(lo, hi, *shape):
            return lo + (hi - lo) * torch.rand(n, *shape, generator=generator)

        return {
            "angle": uniform(-self.rotation, self.rotation),
            "scale": uniform(*self.scale),
            "shift": uniform(-self.translation, self.translation, 2),
            "corners": uniform(-self.perspective, self.perspective, 4, 2),
            "contrast": uniform(*self.contrast),
            "brightness": uniform(-self.brightness, self.brightness),
            "blur": uniform(0.0, self.blur),
            "noise": uniform(0.0, self.noise),
            "jpeg_quality": uniform(*(self.jpeg or (100.0, 100.0))),
            "jpeg_on": torch.rand(n, generator=generator) < (self.jpeg_probability if self.jpeg else 0.0),
        }

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """t(x) for a fresh draw t per image; differentiable in x."""
        return self.apply(x, self.sample(x.shape[0], generator), generator)

    def apply(self, x: torch.Tensor, params: dict[str, torch.Tensor],
              generator: torch.Generator | None = None) -> torch.Tensor:
        if x.dim() != 4:
            check_images(x)
        n, c, h, w = x.shape
        p = {k: v.to(x.device) for k, v in params.items()}
        out = self._geometry(x, p)
        view = (n, 1, 1, 1)
        out = (out - 0.5) * p["contrast"].view(view) + 0.5 + p["brightness"].view(view)
        if self.blur > 0:
            sigma = p["blur"].clamp_min(1e-3)[:, None].expand(n, 2).contiguous()
            blurred = gaussian_blur2d(out, (5, 5), sigma, border_type="replicate")
            out = torch.where((p["blur"] > 0.05).view(view), blurred, out)
        if self.noise > 0:
            noise = torch.randn(out.shape, generator=generator).to(x.device)
            out = out + noise * p["noise"].view(view)
        out = out.clamp(0.0, 1.0)
        if self.jpeg is not None and bool(p["jpeg_on"].any()):
            out = torch.where(p["jpeg_on"].view(view), jpeg(out, p["jpeg_quality"]), out)
        return out.clamp(0.0, 1.0)

    def _geometry(self, x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        """One homography per image: rotation and scale about the centre, shift, corner jitter."""
        n, _, h, w = x.shape
        if not (self.rotation or self.translation or self.perspective or self.scale != (1.0, 1.0)):
            return x
        side = torch.tensor([w - 1, h - 1], dtype=x.dtype, device=x.device)
        src = torch.tensor([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=x.dtype, device=x.device) * side
        center = side / 2
        theta = p["angle"] * math.pi / 180
        cos, sin = torch.cos(theta), torch.sin(theta)
        rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (n, 2, 2)
        rel = (src - center)[None]  # (1, 4, 2)
        dst = (rel @ rot.transpose(1, 2)) * p["scale"].view(n, 1, 1) + center
        dst = dst + (p["shift"][:, None, :] + p["corners"]) * side
        matrix = get_perspective_transform(src.expand(n, 4, 2), dst)
        return warp_perspective(x, matrix, (h, w), padding_mode="border", align_corners=True)


def jpeg(x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """Differentiable JPEG round trip per image; grey images go through as three equal channels."""
    if x.shape[1] == 1:
        return jpeg_codec_differentiable(x.expand(-1, 3, -1, -1), quality).mean(1, keepdim=True)
    return jpeg_codec_differentiable(x, quality)
