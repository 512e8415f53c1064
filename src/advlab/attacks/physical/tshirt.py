"""The adversarial T-shirt (Xu, Zhang, Liu, Liu, Chen, Chen, Fan, Wang and Lin 2020, "Adversarial
T-shirt! Evading person detectors in a physical world"): a universal patch that keeps working while
the cloth it is printed on folds.

Xu et al. model the cloth's non-rigid deformation by a thin plate spline (TPS, sec. 3.1): control
points on a regular grid over the patch are displaced, and the TPS through the displaced points
warps the patch; they add a colour transformation standing for the printer and the rigid and
photometric transformations of EOT, and train the patch on the expected attack loss over all of
them (their eq. for the EOT objective, here with a classifier in place of the person detector):

    p* = argmin_p E_{x ~ X_s, t ~ T_rigid+photo, c ~ C, d ~ TPS} [ loss(f(t(A(d(c(p)), x)))) ]

where c is the printer's colour map, d a TPS deformation, A pastes the patch onto an image of
the "person" class s, and loss is the margin of class s over the best other class (evasion) or the
cross-entropy toward a target class. Here the TPS is kornia's (get_tps_transform / warp_image_tps).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from kornia.geometry.transform import get_tps_transform, warp_image_tps
from torch import nn

from advlab.attacks.base import Cost
from advlab.attacks.physical.patch import patch_side, place_patch, train_patch
from advlab.attacks.physical.transforms import PrintPhotoTransforms
from advlab.errors import AdvlabError, check_images, check_range
from advlab.runtime import eval_mode

MAX_STRENGTH = 0.15


@dataclass(frozen=True)
class ClothDeformation:
    """Printer colour and cloth folds applied to a patch, drawn per copy.

    strength: the largest displacement of a TPS control point, as a share of the patch's side
    (0: rigid, no deformation; at most 0.15, below half the spacing of a 4 x 4 grid, so that
    the cloth never folds over itself); grid: control points per side (grid x grid, corners
    included); printer: apply the printer's colour map (a gamut squeezed into [0.08, 0.92] with a
    slight gamma, standing for Xu et al.'s learned colour transformation); colour: the largest
    per-channel gain change of each print (ink and light colour cast).
    """

    strength: float = 0.08
    grid: int = 4
    printer: bool = True
    colour: float = 0.06

    def __post_init__(self) -> None:
        check_range(self.strength, "deformation strength (share of the patch side)", 0.0, MAX_STRENGTH)
        if int(self.grid) != self.grid or not 2 <= self.grid <= 12:
            raise AdvlabError(f"TPS grid must be an integer number of control points per side in 2..12, "
                              f"got {self.grid}")
        check_range(self.colour, "printer colour change", 0.0, 0.5)

    def to_dict(self) -> dict:
        return asdict(self)

    def with_strength(self, strength: float) -> ClothDeformation:
        return ClothDeformation(strength, self.grid, self.printer, self.colour)

    def control_points(self, dtype=torch.float32) -> torch.Tensor:
        """The undisplaced grid, (grid * grid, 2) in grid_sample's normalized (x, y) frame."""
        line = torch.linspace(-1, 1, self.grid, dtype=dtype)
        gy, gx = torch.meshgrid(line, line, indexing="ij")
        return torch.stack([gx.flatten(), gy.flatten()], 1)

    def sample(self, n: int, channels: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """n draws: control-point displacements (n, grid * grid, 2), normalized (the side spans 2)
        and per-channel gains (n, channels)."""
        shift = (torch.rand(n, self.grid * self.grid, 2, generator=generator) * 2 - 1) * (2 * self.strength)
        gain = 1 + (torch.rand(n, channels, generator=generator) * 2 - 1) * self.colour
        return {"displacement": shift, "gain": gain}

    def apply(self, patch: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """The printed, folded copies (n, C, p, p) of patch (C, p, p); differentiable in the patch."""
        n = len(params["displacement"])
        out = patch.expand(n, -1, -1, -1) if patch.dim() == 3 else patch
        if self.printer:
            out = printer_colour(out)
        out = out * params["gain"].to(out.device, out.dtype)[:, :, None, None]
        displacement = params["displacement"].to(out.device, out.dtype)
        if bool((displacement != 0).any()):
            out = tps_warp(out, self.control_points(out.dtype).to(out.device), displacement)
        return out.clamp(0.0, 1.0)

    def __call__(self, patch: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.apply(patch, self.sample(n, patch.shape[-3], generator))


def printer_colour(x: torch.Tensor) -> torch.Tensor:
    """A fixed printer colour map: no print is pure black or pure white, and mid-tones darken a
    little (dot gain); a smooth stand-in for Xu et al.'s colour transformation fitted to prints."""
    return 0.08 + 0.84 * x.clamp(0, 1).pow(1.1)


def tps_warp(images: torch.Tensor, points: torch.Tensor, displacement: torch.Tensor) -> torch.Tensor:
    """Warp images (n, C, H, W) by the thin plate spline that carries the control points (K, 2)
    to points + displacement (n, K, 2), both in the normalized frame. The cloth keeps covering the
    patch's square: what a fold pulls in from outside repeats the patch's border."""
    n = images.shape[0]
    src = points.expand(n, -1, -1)
    dst = src + displacement
    kernel_weights, affine_weights = get_tps_transform(dst, src)
    return warp_image_tps(images, src, kernel_weights, affine_weights, align_corners=False,
                          padding_mode="border")


def sample_chest_placements(n: int, height: int, width: int, side: int, rotation: float = 15.0,
                            scale: tuple[float, float] = (0.85, 1.15), jitter: float = 0.12,
                            generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Placements of a worn patch: near the image centre (where a CIFAR-10 image's object is),
    shifted by up to `jitter` of the side, turned by up to `rotation` degrees, scaled."""
    angle = (torch.rand(n, generator=generator) * 2 - 1) * rotation
    s = scale[0] + (scale[1] - scale[0]) * torch.rand(n, generator=generator)
    offset = (torch.rand(n, 2, generator=generator) * 2 - 1) * jitter * torch.tensor([width, height])
    centre = torch.tensor([(width - 1) / 2, (height - 1) / 2]) + offset
    return {"angle": angle, "scale": s, "center": centre}


class AdversarialTShirt:
    """A universal patch worn by the images of class ``source``.

    target None: evasion (the classifier should no longer see ``source``; loss: the margin of
    source's logit over the best other, floored at -kappa so that fooled images stop pulling);
    otherwise targeted (cross-entropy toward ``target``). size: share of the image area the patch
    covers; deformation: the printer colour and TPS folds of each training copy (strength 0 gives
    the rigid-only baseline); rotation, scale, jitter: the rigid placement on the chest;
    transforms: the camera's distribution after pasting (PrintPhotoTransforms; None for none);
    Adam with lr for `steps` steps on batches of batch_size images; the patch stays in [0, 1].
    """

    def __init__(self, source: int, target: int | None = None, size: float = 0.15, steps: int = 300,
                 lr: float = 0.05, batch_size: int = 32, deformation: ClothDeformation | None = None,
                 rotation: float = 15.0, scale: tuple[float, float] = (0.85, 1.15), jitter: float = 0.12,
                 transforms: PrintPhotoTransforms | None = PrintPhotoTransforms(), kappa: float = 5.0,
                 seed: int = 0) -> None:
        if int(steps) != steps or steps < 1 or int(batch_size) != batch_size or batch_size < 1:
            raise AdvlabError(f"steps and batch size must be positive integers, got {steps} and {batch_size}")
        if target is not None and int(target) == int(source):
            raise AdvlabError("the target class must differ from the class wearing the patch")
        check_range(lr, "learning rate", 0.0, 10.0, lo_open=True)
        check_range(rotation, "rotation (degrees)", 0.0, 180.0)
        check_range(jitter, "placement jitter", 0.0, 0.5)
        check_range(size, "patch size (share of the image area)", 0.0, 1.0, lo_open=True)
        self.source, self.target = int(source), (None if target is None else int(target))
        self.size, self.steps, self.lr, self.batch_size = size, int(steps), lr, int(batch_size)
        self.deformation = deformation if deformation is not None else ClothDeformation()
        self.rotation, self.scale, self.jitter = rotation, tuple(scale), jitter
        self.transforms, self.kappa, self.seed = transforms, kappa, seed
        self.cost = Cost()
        self.history: list[float] = []

    def loss(self, logits: torch.Tensor) -> torch.Tensor:
        if self.target is not None:
            return F.cross_entropy(logits, torch.full((len(logits),), self.target, device=logits.device))
        own = logits[:, self.source]
        others = logits.clone()
        others[:, self.source] = -torch.inf
        return (own - others.amax(1)).clamp_min(-self.kappa).mean()

    def fit(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, progress: bool = False) -> torch.Tensor:
        check_images(x)
        x = x[y.to(x.device) == self.source]
        if len(x) == 0:
            raise AdvlabError(f"no training image of class {self.source} to wear the patch")
        side = patch_side(self.size, *x.shape[-2:])
        generator = torch.Generator().manual_seed(self.seed)

        def render(patch: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
            images = self.wear(patch, batch, self.deformation, generator)
            return self.transforms(images, generator) if self.transforms is not None else images

        return train_patch(model, x, side, self.steps, self.lr, self.batch_size, generator, render, self.loss,
                           self.cost, self.history, "t-shirt", progress)

    def wear(self, patch: torch.Tensor, x: torch.Tensor, deformation: ClothDeformation,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """x with a printed, folded copy of patch on each image's chest."""
        n, c, h, w = x.shape
        copies = deformation(patch, n, generator)
        placement = sample_chest_placements(n, h, w, patch.shape[-1], self.rotation, self.scale, self.jitter,
                                            generator)
        return place_patch(x, copies, placement)[0]


@torch.no_grad()
def tshirt_success_rate(model: nn.Module, patch: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                        wearer: AdversarialTShirt, deformation: ClothDeformation, draws: int = 5,
                        transforms: PrintPhotoTransforms | None = None, photo=None, seed: int = 1,
                        batch_size: int = 250) -> dict:
    """Xu et al.'s attack success rate on held-out images of the wearer's class that the model
    classifies correctly without the patch: the share of (image, draw) pairs where the patched
    image is not classified as the source (evasion) or is classified as the target, each draw a
    fresh deformation and placement, then `transforms` (sampled) and `photo` (e.g. a
    PrintPhotoSimulation) when given. The same for a uniformly random patch of the same size."""
    check_images(x)
    x = x[y.to(x.device) == wearer.source]
    if len(x):
        x = x[_predict(model, x, batch_size) == wearer.source]
    if len(x) == 0:
        raise AdvlabError(f"no held-out image of class {wearer.source} is classified correctly; nothing to attack")
    generator = torch.Generator().manual_seed(seed)
    noise_patch = torch.rand(patch.shape, generator=generator).to(x.device)
    hits = {"patch": 0, "random": 0}
    for draw in range(draws):
        state = generator.get_state()
        for name, p in (("patch", patch), ("random", noise_patch)):
            generator.set_state(state)  # the same deformations and placements for both patches
            images = wearer.wear(p, x, deformation, generator)
            if transforms is not None:
                images = transforms(images, generator)
            if photo is not None:
                images = photo(images, seed=seed + draw)
            pred = _predict(model, images, batch_size)
            hit = pred != wearer.source if wearer.target is None else pred == wearer.target
            hits[name] += int(hit.sum())
    total = len(x) * draws
    return {"success_rate": hits["patch"] / total, "random_patch_rate": hits["random"] / total,
            "images": len(x), "draws": draws}


def _predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    with eval_mode(model):
        return torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def strength_grid(top: float = MAX_STRENGTH, points: int = 6) -> list[float]:
    """Evenly spaced deformation strengths from 0 (rigid) to top."""
    check_range(top, "deformation strength", 0.0, MAX_STRENGTH)
    return [round(top * i / (points - 1), 4) for i in range(points)] if points > 1 else [top]



def compare_tshirts(model: nn.Module, train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                    test_y: torch.Tensor, source: int, target: int | None = None, size: float = 0.15,
                    steps: int = 300, lr: float = 0.05, train_strength: float = 0.08, test_strength: float = 0.08,
                    strengths: list[float] | None = None, grid: int = 4, draws: int = 5, seed: int = 0,
                    photo=None, progress: bool = False) -> dict:
    """Xu et al.'s comparison: a patch trained with TPS deformations (train_strength) against one
    trained with rigid transformations only (strength 0), everything else equal, both measured on
    held-out images with fresh draws: undeformed, TPS-deformed at test_strength (digital: the
    sampled camera transformations), and deformed then passed through `photo` (the print-and-photo
    simulation, when given); plus success against the test strength for both and a random patch."""
    deformations = {"TPS": ClothDeformation(train_strength, grid), "rigid": ClothDeformation(0.0, grid)}
    test_deformation = ClothDeformation(test_strength, grid)
    strengths = strengths if strengths is not None else strength_grid()
    for s in strengths:
        check_range(s, "deformation strength", 0.0, MAX_STRENGTH)
    camera = PrintPhotoTransforms()
    patches, wearers, costs = {}, {}, {}
    for name, deformation in deformations.items():
        wearers[name] = AdversarialTShirt(source, target, size=size, steps=steps, lr=lr, deformation=deformation,
                                          seed=seed)
        patches[name] = wearers[name].fit(model, train_x, train_y, progress=progress)
        costs[name] = wearers[name].cost.to_dict()
    rows, curves = [], {}
    for name in deformations:
        wearer, patch = wearers[name], patches[name]
        row = {"patch": f"trained {'with TPS' if name == 'TPS' else 'rigid only'}"}
        undeformed = tshirt_success_rate(model, patch, test_x, test_y, wearer, test_deformation.with_strength(0.0),
                                         draws, camera, seed=seed + 1)
        deformed = tshirt_success_rate(model, patch, test_x, test_y, wearer, test_deformation, draws, camera,
                                       seed=seed + 1)
        row.update(undeformed=undeformed["success_rate"], deformed=deformed["success_rate"],
                   random_undeformed=undeformed["random_patch_rate"], random_deformed=deformed["random_patch_rate"],
                   images=deformed["images"], draws=draws)
        if photo is not None:
            photographed = tshirt_success_rate(model, patch, test_x, test_y, wearer, test_deformation, draws,
                                               camera, photo=photo, seed=seed + 1)
            row.update(deformed_photo=photographed["success_rate"],
                       random_deformed_photo=photographed["random_patch_rate"])
        rows.append(row)
        curve = []
        for s in strengths:
            r = tshirt_success_rate(model, patch, test_x, test_y, wearer, test_deformation.with_strength(s), draws,
                                    camera, seed=seed + 1)
            curve.append({"strength": s, "success_rate": r["success_rate"],
                          "random_patch_rate": r["random_patch_rate"]})
        curves[row["patch"]] = curve
    curves["random patch"] = [{"strength": r["strength"], "success_rate": r["random_patch_rate"]}
                              for r in curves[rows[0]["patch"]]]
    return {"rows": rows, "curves": curves, "patches": patches, "wearers": wearers, "cost": costs}
