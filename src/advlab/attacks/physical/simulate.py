"""A print-and-photo simulation for evaluation, and the destruction rate of Kurakin et al. 2016.

The simulation is deliberately *not* the distribution EOT optimizes (transforms.py) and is not
differentiable: it works on 8-bit PIL images the way a printer, a camera and an encoder would, with
real JPEG encoding (PIL), bicubic rotation and crop-and-resize resampling, gamma and per-channel
colour gain, and Gaussian-plus-shot sensor noise. Each image gets its own draw from a NumPy
generator seeded by ``seed``, so the same seed gives the same photographs.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from advlab.errors import AdvlabError, check_images, check_range
from advlab.runtime import BatchSize, as_batch_size, eval_mode


@dataclass(frozen=True)
class PrintPhotoSimulation:
    """rotation: max |degrees|; crop: max share of each side cut before resizing back; gamma:
    (lo, hi) exponent; colour: max |per-channel gain - 1|; brightness: max |exposure gain - 1|;
    noise: max Gaussian sensor-noise std; shot: Poisson-like noise scale (std = shot * sqrt(pixel));
    jpeg: (lo, hi) quality of the real JPEG encoding."""

    rotation: float = 6.0
    crop: float = 0.06
    gamma: tuple[float, float] = (0.8, 1.25)
    colour: float = 0.06
    brightness: float = 0.08
    noise: float = 0.02
    shot: float = 0.02
    jpeg: tuple[int, int] = (60, 90)

    def __post_init__(self) -> None:
        check_range(self.rotation, "rotation (degrees)", 0.0, 45.0)
        check_range(self.crop, "crop", 0.0, 0.3)
        check_range(self.colour, "colour shift", 0.0, 1.0)
        check_range(self.brightness, "brightness", 0.0, 1.0)
        check_range(self.noise, "noise", 0.0, 1.0)
        check_range(self.shot, "shot noise", 0.0, 1.0)
        if not 0 < self.gamma[0] <= self.gamma[1]:
            raise AdvlabError(f"gamma range must be 0 < lo <= hi, got {self.gamma}")
        if not 1 <= self.jpeg[0] <= self.jpeg[1] <= 100:
            raise AdvlabError(f"jpeg quality range must lie in [1, 100] with lo <= hi, got {self.jpeg}")

    def to_dict(self) -> dict:
        return asdict(self)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
        """The simulated photographs of a batch in [0, 1] (same shape, same device)."""
        check_images(x)
        rng = np.random.default_rng(seed)
        arrays = (x.detach().cpu().clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
        out = np.stack([self._photograph(a, rng) for a in arrays])
        return torch.from_numpy(out).permute(0, 3, 1, 2).to(x.device, x.dtype)

    def _photograph(self, array: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w, c = array.shape
        image = Image.fromarray(array[..., 0] if c == 1 else array, mode="L" if c == 1 else "RGB")
        # Print: the paper's edge colour fills what the rotation uncovers.
        border = np.concatenate([array[0], array[-1], array[:, 0], array[:, -1]]).mean(0)
        fill = int(border[0]) if c == 1 else tuple(int(v) for v in border)
        image = image.rotate(rng.uniform(-self.rotation, self.rotation), resample=Image.BICUBIC, fillcolor=fill)
        # Framing: a slightly off crop, resampled back to the sensor's size.
        cuts = rng.uniform(0, self.crop, 4) * np.array([w, h, w, h])
        box = (cuts[0], cuts[1], w - cuts[2], h - cuts[3])
        image = image.resize((w, h), resample=Image.BILINEAR, box=box)
        pixels = np.asarray(image, dtype=np.float64).reshape(h, w, c) / 255
        # Exposure, gamma and white balance, then sensor noise.
        gain = rng.uniform(1 - self.brightness, 1 + self.brightness) * rng.uniform(1 - self.colour, 1 + self.colour, c)
        pixels = np.clip(pixels * gain, 0, 1) ** rng.uniform(*self.gamma)
        std = np.sqrt((self.noise * rng.uniform()) ** 2 + self.shot ** 2 * pixels)
        pixels = np.clip(pixels + rng.standard_normal(pixels.shape) * std, 0, 1)
        # The camera's encoder: a real JPEG round trip.
        image = Image.fromarray((pixels * 255).round().astype(np.uint8).squeeze(-1) if c == 1 else
                                (pixels * 255).round().astype(np.uint8), mode="L" if c == 1 else "RGB")
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=int(rng.integers(self.jpeg[0], self.jpeg[1] + 1)))
        buffer.seek(0)
        decoded = np.asarray(Image.open(buffer).convert("L" if c == 1 else "RGB"), dtype=np.float32) / 255
        return decoded.reshape(h, w, c)


def destruction_rate(clean_correct: torch.Tensor, adv_correct: torch.Tensor,
                     transformed_adv_correct: torch.Tensor) -> float:
    """Kurakin, Goodfellow and Bengio 2016, section 3.1, the destruction rate

        d = sum_k C(X^k) (1 - C(X^k_adv)) C(T(X^k_adv)) / sum_k C(X^k) (1 - C(X^k_adv)),

    where C(.) is 1 when the image is classified correctly: among the adversarial images whose clean
    image was classified correctly, the share the transformation T turns back to correct.
    NaN when no image qualifies.
    """
    clean, adv, transformed = (t.bool() for t in (clean_correct, adv_correct, transformed_adv_correct))
    if not clean.shape == adv.shape == transformed.shape:
        raise AdvlabError("destruction_rate needs three indicator vectors of the same length")
    qualifying = clean & ~adv
    if not qualifying.any():
        return float("nan")
    return (qualifying & transformed).sum().item() / qualifying.sum().item()


@torch.no_grad()
def measure_destruction(model: nn.Module, x: torch.Tensor, y: torch.Tensor, adv: torch.Tensor,
                        transform, batch_size: int | BatchSize = 500) -> dict:
    """Destruction rate of adv under transform (a callable on batches, e.g. a PrintPhotoSimulation),
    with the counts behind it and the accuracy on transformed clean images for reference. A forward pass
    that runs out of memory is retried at half the batch (advlab.runtime.BatchSize)."""
    batch = as_batch_size(batch_size)

    def predict(images):
        with eval_mode(model), torch.no_grad():
            return batch.cat(lambda s: model(images[s]).argmax(1), len(images))

    photo_adv, photo_clean = transform(adv), transform(x)
    clean_ok, adv_ok = predict(x) == y, predict(adv) == y
    photo_adv_ok, photo_clean_ok = predict(photo_adv) == y, predict(photo_clean) == y
    qualifying = clean_ok & ~adv_ok
    return {"destruction_rate": destruction_rate(clean_ok, adv_ok, photo_adv_ok),
            "qualifying": int(qualifying.sum()), "destroyed": int((qualifying & photo_adv_ok).sum()),
            "clean_accuracy": clean_ok.float().mean().item(), "adv_accuracy": adv_ok.float().mean().item(),
            "photo_clean_accuracy": photo_clean_ok.float().mean().item(),
            "photo_adv_accuracy": photo_adv_ok.float().mean().item()}
