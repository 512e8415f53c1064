"""Backdoor triggers: functions of a float [0, 1] NCHW batch that stamp a pattern on every image.

- :class:`PatchTrigger`: a small pixel patch at a fixed place (BadNets, Gu, Dolan-Gavitt and Garg 2017).
- :class:`BlendTrigger`: x' = (1 - alpha) x + alpha P for a fixed random-noise or image pattern P
  (blended injection, Chen, Liu, Li, Lu and Song 2017).
- :class:`PeriodicTrigger`: x' = clip(x + delta sin(2 pi f j / W)) along one axis (the sinusoidal
  signal of Barni, Kallas and Tondi 2019).
- :class:`PixelTrigger`: single pixels set to fixed colours, as in the SPECTRE reference
  (Hayase et al. 2021); with several pixels, each training poison gets one at random and test
  images get all of them.

A trigger is configured once; ``trigger(x)`` applies it (test time), ``trigger(x, training=True,
generator=g)`` the training-time variant. ``describe()`` returns the parameters as a dict, which
goes into the training recipe so different triggers never share a cached model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from advlab.errors import AdvlabError, check_images, check_range

LOCATIONS = ("bottom-right", "bottom-left", "top-right", "top-left", "center")
PATTERNS = ("checkerboard", "white", "black", "random")
TRIGGERS = ("patch", "blend", "noise", "periodic", "pixel")

# SPECTRE's reference pixels: (column x, row y) and an RGB colour in 0..255 (Hayase et al. 2021, sec. 5).
SPECTRE_PIXELS = (((11, 16), (101, 0, 25)), ((5, 27), (101, 123, 121)), ((30, 7), (0, 36, 54)))


class Trigger:
    """Base class: subclasses implement stamp(x, training, generator) on a checked batch."""

    name = "trigger"

    def __call__(self, x: torch.Tensor, training: bool = False, generator: torch.Generator | None = None):
        check_images(x, "images to trigger")
        return self.stamp(x, training, generator).clamp(0.0, 1.0)

    def stamp(self, x: torch.Tensor, training: bool, generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> dict:
        raise NotImplementedError


def _pattern_tensor(pattern: str, channels: int, size: int, seed: int) -> torch.Tensor:
    if pattern == "checkerboard":
        rows = torch.arange(size)[:, None]
        cols = torch.arange(size)[None, :]
        board = ((rows + cols) % 2 == 0).float()
        return board.expand(channels, size, size).clone()
    if pattern == "white":
        return torch.ones(channels, size, size)
    if pattern == "black":
        return torch.zeros(channels, size, size)
    if pattern == "random":
        return torch.rand(channels, size, size, generator=torch.Generator().manual_seed(seed)).round()
    raise AdvlabError(f"unknown patch pattern {pattern!r}; choose one of {', '.join(PATTERNS)}")


@dataclass
class PatchTrigger(Trigger):
    """BadNets: overwrite a size x size patch (checkerboard by default) at `location`, which is one
    of LOCATIONS (`margin` pixels from the border) or an explicit (row, col) of its top-left corner."""

    size: int = 3
    location: str | tuple[int, int] = "bottom-right"
    pattern: str = "checkerboard"
    margin: int = 1
    seed: int = 0
    name = "patch"

    def __post_init__(self) -> None:
        if int(self.size) != self.size or self.size < 1:
            raise AdvlabError(f"patch size must be a positive integer, got {self.size}")
        if isinstance(self.location, str) and self.location not in LOCATIONS:
            raise AdvlabError(f"unknown patch location {self.location!r}; choose one of {', '.join(LOCATIONS)} "
                              "or give (row, col)")
        _pattern_tensor(self.pattern, 1, 1, self.seed)  # validates the name

    def corner(self, height: int, width: int) -> tuple[int, int]:
        s, g = self.size, self.margin
        if s + g > min(height, width):
            raise AdvlabError(f"a {s}x{s} patch with margin {g} does not fit {height}x{width} images")
        if not isinstance(self.location, str):
            row, col = (int(v) for v in self.location)
            if not (0 <= row <= height - s and 0 <= col <= width - s):
                raise AdvlabError(f"patch at (row {row}, col {col}) of size {s} leaves the {height}x{width} image")
            return row, col
        return {"bottom-right": (height - s - g, width - s - g), "bottom-left": (height - s - g, g),
                "top-right": (g, width - s - g), "top-left": (g, g),
                "center": ((height - s) // 2, (width - s) // 2)}[self.location]

    def region(self, height: int, width: int) -> tuple[slice, slice]:
        row, col = self.corner(height, width)
        return slice(row, row + self.size), slice(col, col + self.size)

    def stamp(self, x, training, generator):
        rows, cols = self.region(x.shape[2], x.shape[3])
        out = x.clone()
        out[:, :, rows, cols] = _pattern_tensor(self.pattern, x.shape[1], self.size, self.seed).to(x)
        return out

    def describe(self) -> dict:
        return {"trigger": "patch", "size": self.size, "location": list(self.location)
                if not isinstance(self.location, str) else self.location, "pattern": self.pattern,
                "margin": self.margin, "seed": self.seed}


@dataclass
class BlendTrigger(Trigger):
    """Blended injection: x' = (1 - alpha) x + alpha P, P uniform noise from `seed` (Chen et al.
    2017's random-noise pattern) or a given image tensor (C, H, W) in [0, 1]."""

    alpha: float = 0.1
    image: torch.Tensor | None = None
    seed: int = 0
    name = "blend"

    def __post_init__(self) -> None:
        self.alpha = check_range(self.alpha, "blend alpha", 0.0, 1.0, lo_open=True)
        if self.image is not None:
            check_images(self.image.unsqueeze(0), "blend image")

    def pattern(self, channels: int, height: int, width: int) -> torch.Tensor:
        if self.image is None:
            return torch.rand(channels, height, width, generator=torch.Generator().manual_seed(self.seed))
        if tuple(self.image.shape) != (channels, height, width):
            raise AdvlabError(f"blend image has shape {tuple(self.image.shape)} but images are "
                              f"{(channels, height, width)}")
        return self.image

    def stamp(self, x, training, generator):
        return (1 - self.alpha) * x + self.alpha * self.pattern(*x.shape[1:]).to(x)

    def describe(self) -> dict:
        return {"trigger": "blend" if self.image is not None else "noise", "alpha": self.alpha, "seed": self.seed,
                "image": None if self.image is None else "user image"}


@dataclass
class PeriodicTrigger(Trigger):
    """Barni et al. 2019's sinusoidal signal: add delta sin(2 pi cycles j / W) along one axis (the
    same for every row, or column with axis='vertical') to every channel, then clip to [0, 1]."""

    amplitude: float = 20 / 255
    cycles: float = 6.0
    axis: str = "horizontal"
    name = "periodic"

    def __post_init__(self) -> None:
        self.amplitude = check_range(self.amplitude, "periodic amplitude", 0.0, 1.0, lo_open=True)
        if self.axis not in ("horizontal", "vertical"):
            raise AdvlabError(f"periodic axis must be horizontal or vertical, got {self.axis!r}")

    def signal(self, height: int, width: int) -> torch.Tensor:
        length = width if self.axis == "horizontal" else height
        wave = self.amplitude * torch.sin(2 * math.pi * self.cycles * torch.arange(length) / length)
        return wave.view(1, length).expand(height, width) if self.axis == "horizontal" else \
            wave.view(length, 1).expand(height, width)

    def stamp(self, x, training, generator):
        return x + self.signal(x.shape[2], x.shape[3]).to(x)

    def describe(self) -> dict:
        return {"trigger": "periodic", "amplitude": self.amplitude, "cycles": self.cycles, "axis": self.axis}


@dataclass
class PixelTrigger(Trigger):
    """Set pixels ((col x, row y), (r, g, b) in 0..255) to fixed colours (SPECTRE's triggers; a
    grey-scale image gets the colour's mean). Training poisons get one pixel each, at random, when
    there are several; test images get all of them."""

    pixels: tuple = SPECTRE_PIXELS[:1]
    name = "pixel"

    def __post_init__(self) -> None:
        if not self.pixels:
            raise AdvlabError("a pixel trigger needs at least one pixel")
        for (px, py), rgb in self.pixels:
            if px < 0 or py < 0 or len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
                raise AdvlabError(f"bad trigger pixel {((px, py), rgb)}; want ((x, y), (r, g, b) in 0..255)")

    def stamp(self, x, training, generator):
        n, c, h, w = x.shape
        out = x.clone()
        choice = None
        if training and len(self.pixels) > 1:
            choice = torch.randint(len(self.pixels), (n,), generator=generator)
        for index, ((px, py), rgb) in enumerate(self.pixels):
            if px >= w or py >= h:
                raise AdvlabError(f"trigger pixel (x={px}, y={py}) is outside {h}x{w} images")
            colour = torch.tensor(rgb, dtype=x.dtype, device=x.device) / 255
            colour = colour.view(3, 1) if c == 3 else colour.mean().view(1, 1)
            rows = slice(None) if choice is None else (choice == index).to(x.device)
            target = out[rows]
            target[:, :, py, px] = colour.view(1, c).expand(target.shape[0], c)
            out[rows] = target
        return out

    def describe(self) -> dict:
        return {"trigger": "pixel", "pixels": [[list(p), list(rgb)] for p, rgb in self.pixels]}


def make_trigger(name: str, **options) -> Trigger:
    """A trigger by name: patch, blend (needs image=...), noise (blend with random noise), periodic,
    pixel (SPECTRE's; pixels=1..3 picks that many reference pixels)."""
    if name == "patch":
        return PatchTrigger(**options)
    if name == "noise":
        return BlendTrigger(**{"alpha": 0.1, **options})
    if name == "blend":
        if options.get("image") is None:
            raise AdvlabError("the blend trigger needs an image=...; use 'noise' for a random-noise pattern")
        return BlendTrigger(**options)
    if name == "periodic":
        return PeriodicTrigger(**options)
    if name == "pixel":
        count = int(options.pop("pixels", 1))
        if count not in (1, 2, 3):
            raise AdvlabError(f"the pixel trigger takes 1, 2 or 3 reference pixels, got {count}")
        return PixelTrigger(SPECTRE_PIXELS[:count])
    raise AdvlabError(f"unknown trigger {name!r}; choose one of {', '.join(TRIGGERS)}")
