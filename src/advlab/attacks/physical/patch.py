"""A universal, printable adversarial patch (Brown et al. 2017, "Adversarial patch", eq. 1; in the
spirit of Xu et al. 2020's adversarial T-shirt): one patch p that, pasted onto any image at a random
position, scale and rotation and then photographed, makes the classifier predict a target class:

    p* = argmax_p E_{x ~ X, l ~ L, t ~ T} [log Pr(target | t(A(p, x, l)))]

where A pastes p at location/scale/rotation l. The patch is kept in [0, 1] (printable). Pasting
is alpha compositing with the warped patch's coverage mask, so pixels outside the patch never
change.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from kornia.geometry.transform import warp_affine
from torch import nn
from tqdm.auto import tqdm

from advlab.attacks.base import Cost, attack_mode
from advlab.attacks.physical.transforms import PrintPhotoTransforms
from advlab.errors import AdvlabError, check_images, check_range
from advlab.runtime import BatchSize, as_batch_size, eval_mode


def train_patch(model: nn.Module, x: torch.Tensor, side: int, steps: int, lr: float, batch_size: int,
                generator: torch.Generator, render: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                loss: Callable[[torch.Tensor], torch.Tensor], cost: Cost, history: list[float],
                desc: str = "patch", progress: bool = False) -> torch.Tensor:
    """The one patch-training loop (the universal patch and the T-shirt): a uniformly random
    side x side patch, then `steps` Adam steps on loss(model(render(patch, batch))) over random
    batches of x, the patch kept in [0, 1] (printable) after each. render(patch, batch) pastes the
    patch (and samples its transformations with `generator`). Passes are added to cost and each
    step's loss to history."""
    n, c = x.shape[:2]
    patch = torch.rand(c, side, side, generator=generator).to(x.device).requires_grad_(True)
    optimizer = torch.optim.Adam([patch], lr=lr)
    with attack_mode(model):
        for _ in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
            batch = x[torch.randint(n, (min(batch_size, n),), generator=generator).to(x.device)]
            value = loss(model(render(patch, batch)))
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
            with torch.no_grad():
                patch.clamp_(0, 1)
            cost.forward += len(batch)
            cost.backward += len(batch)
            history.append(value.item())
    return patch.detach()


def patch_side(size: float, height: int, width: int) -> int:
    """Side in pixels of a square patch covering `size` (a share of the image area)."""
    check_range(size, "patch size (share of the image area)", 0.0, 1.0, lo_open=True)
    return max(1, round(math.sqrt(size * height * width)))


def sample_placements(n: int, height: int, width: int, side: int, rotation: float = 20.0,
                      scale: tuple[float, float] = (0.8, 1.2),
                      generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """n random placements: angle (degrees), scale and a centre (x, y) that keeps the patch's
    bounding box inside the image when it fits."""
    angle = (torch.rand(n, generator=generator) * 2 - 1) * rotation
    s = scale[0] + (scale[1] - scale[0]) * torch.rand(n, generator=generator)
    rad = angle.abs() * math.pi / 180
    half = side * s / 2 * (torch.cos(rad) + torch.sin(rad))
    u = torch.rand(n, 2, generator=generator)
    lo = half.clamp(max=(min(height, width) - 1) / 2)
    cx = lo + u[:, 0] * ((width - 1) - 2 * lo).clamp_min(0)
    cy = lo + u[:, 1] * ((height - 1) - 2 * lo).clamp_min(0)
    return {"angle": angle, "scale": s, "center": torch.stack([cx, cy], 1)}


def place_patch(x: torch.Tensor, patch: torch.Tensor, placement: dict[str, torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste patch (C, p, p), or one patch per image (N, C, p, p), onto each image at its placement;
    returns (patched images, coverage mask in [0, 1] of shape (N, 1, H, W)). Differentiable in the
    patch and in x."""
    n, c, h, w = x.shape
    if patch.dim() == 4 and patch.shape[0] == n:
        per_image = patch
    elif patch.dim() == 3:
        per_image = patch.expand(n, -1, -1, -1)
    else:
        per_image = None
    if per_image is None or patch.shape[-3] != c:
        raise AdvlabError(f"patch must be shaped ({c}, side, side) or ({n}, {c}, side, side) for these images, "
                          f"got {tuple(patch.shape)}")
    side = patch.shape[-1]
    p = {k: v.to(x.device, x.dtype) for k, v in placement.items()}
    theta = p["angle"] * math.pi / 180
    cos, sin = torch.cos(theta) * p["scale"], torch.sin(theta) * p["scale"]
    linear = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (n, 2, 2)
    middle = torch.full((2,), (side - 1) / 2, dtype=x.dtype, device=x.device)
    shift = p["center"] - linear @ middle
    matrix = torch.cat([linear, shift[:, :, None]], 2)
    warped = warp_affine(per_image, matrix, (h, w), align_corners=True)
    mask = warp_affine(torch.ones(n, 1, side, side, dtype=x.dtype, device=x.device), matrix, (h, w),
                       align_corners=True).clamp(0, 1)
    return (x * (1 - mask) + warped).clamp(0.0, 1.0), mask  # clamp: float rounding only


class UniversalPatch:
    """Train one patch toward ``target``: ``patch = UniversalPatch(target=3, size=0.1).fit(model, x, y)``.

    size: share of the image area the patch covers at scale 1; rotation and scale: the placement
    ranges; transforms: the photo distribution applied after pasting (default PrintPhotoTransforms();
    None for none); Adam with learning rate lr for `steps` steps on batches of batch_size images
    drawn from those whose label is not the target; the patch is clipped to [0, 1] after each step.
    """

    def __init__(self, target: int, size: float = 0.1, steps: int = 300, lr: float = 0.05, batch_size: int = 64,
                 rotation: float = 20.0, scale: tuple[float, float] = (0.8, 1.2),
                 transforms: PrintPhotoTransforms | None = PrintPhotoTransforms(), seed: int = 0) -> None:
        if int(steps) != steps or steps < 1:
            raise AdvlabError(f"steps must be a positive integer, got {steps}")
        check_range(rotation, "rotation (degrees)", 0.0, 180.0)
        check_range(lr, "learning rate", 0.0, 10.0, lo_open=True)
        if not 0 < scale[0] <= scale[1]:
            raise AdvlabError(f"scale range must be 0 < lo <= hi, got {scale}")
        self.target, self.size, self.steps, self.lr = int(target), size, int(steps), lr
        self.batch_size, self.rotation, self.scale = batch_size, rotation, tuple(scale)
        self.transforms, self.seed = transforms, seed
        self.cost = Cost()
        self.history: list[float] = []

    def fit(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None,
            progress: bool = False) -> torch.Tensor:
        check_images(x)
        if y is not None:
            x = x[y.to(x.device) != self.target]
            if len(x) == 0:
                raise AdvlabError("every training image already belongs to the target class")
        h, w = x.shape[-2:]
        side = patch_side(self.size, h, w)
        generator = torch.Generator().manual_seed(self.seed)

        def render(patch: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
            placement = sample_placements(len(batch), h, w, side, self.rotation, self.scale, generator)
            images, _ = place_patch(batch, patch, placement)
            return self.transforms(images, generator) if self.transforms is not None else images

        def loss(logits: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(logits, torch.full((len(logits),), self.target, device=logits.device))

        return train_patch(model, x, side, self.steps, self.lr, self.batch_size, generator, render, loss, self.cost,
                           self.history, "patch", progress)


@torch.no_grad()
def patch_success_rate(model: nn.Module, patch: torch.Tensor, x: torch.Tensor, y: torch.Tensor, target: int,
                       draws: int = 5, rotation: float = 20.0, scale: tuple[float, float] = (0.8, 1.2),
                       photo=None, seed: int = 1, batch_size: int | BatchSize = 500) -> dict:
    """Share of (image, placement) pairs predicted as target, over held-out images not of the target
    class and `draws` fresh placements each; photo (e.g. a PrintPhotoSimulation) is applied after
    pasting when given. Also the same rate for a random patch of the same size, the baseline. The
    model's passes run in batches that halve on out-of-memory (advlab.runtime.BatchSize)."""
    batch = as_batch_size(batch_size)
    check_images(x)
    keep = y.to(x.device) != target
    x = x[keep]
    n, c, h, w = x.shape
    generator = torch.Generator().manual_seed(seed)
    noise_patch = torch.rand(patch.shape, generator=generator).to(x.device)
    hits = baseline = 0
    with eval_mode(model):
        for draw in range(draws):
            placement = sample_placements(n, h, w, patch.shape[-1], rotation, scale, generator)
            for p, counter in ((patch, "patch"), (noise_patch, "noise")):
                images, _ = place_patch(x, p, placement)
                if photo is not None:
                    images = photo(images, seed=seed + draw) if _takes_seed(photo) else photo(images)
                hit = int(batch.cat(lambda s, images=images: model(images[s]).argmax(1) == target, n).sum())
                if counter == "patch":
                    hits += hit
                else:
                    baseline += hit
    total = n * draws
    return {"success_rate": hits / total, "random_patch_rate": baseline / total, "images": n, "draws": draws}


def _takes_seed(photo) -> bool:
    from advlab.attacks.physical.simulate import PrintPhotoSimulation

    return isinstance(photo, PrintPhotoSimulation)
