"""The physical-world measurements behind `advlab physical`, `patch`, `physical3d` and `tshirt`:
destruction rates of digital attacks under a print-and-photo simulation (Kurakin et al. 2016), a
universal patch per size (Brown et al. 2017), renderers for a 3D object (Athalye et al. 2018) and
texture files. Report sections for them are in `advlab.report.physical`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from advlab.attacks import BIM, FGSM, PGD
from advlab.attacks.physical import (
    EOTPGD,
    PrintPhotoSimulation,
    PrintPhotoTransforms,
    UniversalPatch,
    measure_destruction,
    patch_success_rate,
)
from advlab.attacks.physical.eot3d import texture_from_image
from advlab.attacks.physical.render import Renderer, ViewDistribution, check_texture
from advlab.data import ImageDataset
from advlab.errors import AdvlabError
from advlab.runtime import BatchSize, as_batch_size

PHYSICAL_ATTACKS = ("fgsm", "pgd", "eot", "bim")
DEFAULT_ATTACKS = ("fgsm", "pgd", "eot")


def pick(data: ImageDataset, n: int, random_subset: bool, seed: int) -> ImageDataset:
    """The first n images, or n drawn by a fixed permutation (folders sorted by class need it)."""
    if not random_subset:
        return data.head(n)
    return data.subset(torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n])


def physical_attack(name: str, eps: float, steps: int, samples: int, seed: int):
    """FGSM, PGD, Kurakin et al.'s BIM, or EOT-PGD over the print-and-photo transformations, at Linf eps."""
    if name == "fgsm":
        return FGSM(eps=eps)
    if name == "pgd":
        return PGD(eps=eps, steps=steps, seed=seed)
    if name == "bim":  # Kurakin et al.'s own iterative method: steps of 1/255, min(eps + 4, 1.25 eps) of them
        return BIM(eps=eps)
    if name == "eot":
        return EOTPGD(eps=eps, steps=steps, samples=samples, transforms=PrintPhotoTransforms(), seed=seed)
    raise AdvlabError(f"unknown attack {name!r}; choose from {', '.join(PHYSICAL_ATTACKS)}")


def destruction_table(model, x, y, attacks: list[str], eps_values: list[float], steps: int, samples: int,
                      seed: int, batch_size: int | BatchSize = 100, progress: bool = True) -> tuple[list[dict], dict]:
    """For each eps and attack: the adversarial batch and its destruction by PrintPhotoSimulation
    (rows of measure_destruction's statistics; the adversarial batches keyed by (attack, eps)). An attack
    batch that runs out of memory is retried at half the size (advlab.runtime.BatchSize)."""
    batch = as_batch_size(batch_size)
    bad = [a for a in attacks if a not in PHYSICAL_ATTACKS]
    if not attacks or bad:
        raise AdvlabError(f"unknown attack {', '.join(bad) or repr(attacks)}; choose from "
                          f"{', '.join(PHYSICAL_ATTACKS)}")
    simulation = PrintPhotoSimulation()
    rows, examples = [], {}
    jobs = [(eps, name) for eps in eps_values for name in attacks]
    for eps, name in tqdm(jobs, desc="physical", disable=not progress, leave=False):
        attack = physical_attack(name, eps, steps, samples, seed)
        adv = batch.cat(lambda s, attack=attack: attack(model, x[s], y[s]).adv, len(x))
        stats = measure_destruction(model, x, y, adv, lambda images: simulation(images, seed=seed), batch)
        rows.append({"attack": name, "eps": eps, **stats,
                     "survives_photo": 1.0 - stats["photo_adv_accuracy"]})
        examples[(name, eps)] = adv
    return rows, examples


def patch_sweep(model, train_x, train_y, test_x, test_y, target: int, sizes: list[float], steps: int, draws: int,
                seed: int, progress: bool = True, lr: float = 0.05, batch_size: int | BatchSize = 500
                ) -> tuple[list[dict], dict]:
    """Train a patch per size; success on held-out images, digital and through the photo simulation
    (those passes in batches that halve on out-of-memory; the patch's training batch is its recipe's)."""
    batch = as_batch_size(batch_size)
    simulation = PrintPhotoSimulation()
    rows, patches = [], {}
    for size in sizes:
        trainer = UniversalPatch(target, size=size, steps=steps, lr=lr, seed=seed)
        patch = trainer.fit(model, train_x, train_y, progress=progress)
        digital = patch_success_rate(model, patch, test_x, test_y, target, draws=draws, seed=seed + 1,
                                     batch_size=batch)
        photo = patch_success_rate(model, patch, test_x, test_y, target, draws=draws, photo=simulation,
                                   seed=seed + 1, batch_size=batch)
        rows.append({"size": size, "side": patch.shape[-1], **digital, "photo_success_rate": photo["success_rate"],
                     "photo_random_patch_rate": photo["random_patch_rate"], "final_loss": trainer.history[-1],
                     "cost": trainer.cost.to_dict()})
        patches[size] = patch
    return rows, patches


def make_renderers(view_config: dict, train_bg: torch.Tensor, test_bg: torch.Tensor, size: int
                   ) -> tuple[Renderer, Renderer]:
    """Two renderers sharing one view distribution (rotation, distance, translation, noise, supersample,
    shape from view_config): one over the optimization's backgrounds, one over held-out ones."""
    views = ViewDistribution(rotation=tuple(view_config["rotation"]), distance=tuple(view_config["distance"]),
                             translation=view_config["translation"], noise=view_config["noise"])
    return tuple(Renderer(bg, size=size, supersample=view_config["supersample"], shape=view_config["shape"],
                          views=views) for bg in (train_bg, test_bg))


def class_texture(data: ImageDataset, cls: int, index: int = 0, name: str | None = None) -> torch.Tensor:
    """The index-th image of class cls (called name in messages), as an object texture."""
    candidates = (data.labels == cls).nonzero().flatten()
    if not 0 <= index < len(candidates):
        raise AdvlabError(f"--texture-index must be in 0..{len(candidates) - 1} for class {name or cls}")
    return texture_from_image(data.subset(candidates[index:index + 1])[:][0][0])


def load_texture(path: str, channels: int) -> torch.Tensor:
    """A texture file as (C, H, W) floats; refuses what is not an image in [0, 1]."""
    file = Path(path)
    if not file.is_file():
        raise AdvlabError(f"texture file {path} does not exist")
    if file.suffix.lower() == ".npy":
        try:
            array = np.load(file, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise AdvlabError(f"cannot read {path} as a NumPy array ({exc})") from None
        if array.ndim != 3 or not np.issubdtype(array.dtype, np.floating):
            raise AdvlabError(f"{path} must hold floats shaped (H, W, C) or (C, H, W), got {array.dtype} "
                              f"{array.shape}")
        texture = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        if texture.shape[0] not in (1, 3) and texture.shape[-1] in (1, 3):
            texture = texture.permute(2, 0, 1)
    else:
        try:
            with Image.open(file) as image:
                image = image.convert("L" if channels == 1 else "RGB")
                texture = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255)
        except OSError as exc:
            raise AdvlabError(f"cannot read {path} as an image ({exc})") from None
        texture = texture[None] if texture.dim() == 2 else texture.permute(2, 0, 1)
    check_texture(texture, channels)
    if min(texture.shape[1:]) < 4:
        raise AdvlabError(f"texture {path} is too small ({tuple(texture.shape)}); give at least 4 x 4 pixels")
    return texture.contiguous()
