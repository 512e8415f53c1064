"""A 3D adversarial object: Expectation over Transformation on a texture through a renderer
(Athalye, Engstrom, Ilyas and Kwok 2018, "Synthesizing robust adversarial examples", eq. 1 with
t ranging over renderings of the textured object from random poses, lightings and backgrounds):

    x' = argmax_{x'} E_{t ~ T} [log Pr(y_target | t(x'))]    subject to ||x' - x||_inf <= eps, x' in [0, 1]

Athalye et al. bound the change by a penalty on the perceived (LAB) distance of the renderings; we
bound it in texture space with an L-infinity ball, which is simpler to state and to check. The
expectation is estimated by ``samples`` fresh views per step; Adam follows the mean gradient and
each step is projected back onto the ball. With ``fixed_views`` it optimizes for those views only:
the single-view baseline the paper's viewpoint measurements set EOT against.

Measured as the paper does: the share of random viewpoints, drawn afresh (held-out poses, lighting
and background images that the optimization never saw), classified as the target and as the
object's true class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from advlab.attacks.base import Cost, attack_mode
from advlab.attacks.physical.render import Renderer, check_texture, fixed_view, turntable_views
from advlab.errors import AdvlabError, check_range
from advlab.runtime import eval_mode


class TextureEOT:
    """Optimize a texture toward ``target``: ``TextureEOT(target=3, eps=0.1).fit(model, renderer, texture)``.

    eps: the L-infinity bound on the texture's change; steps: Adam steps, each on the mean loss
    over ``samples`` views drawn from renderer.sample (or on ``fixed_views`` every step); lr: Adam's
    step (default eps / 8); seed: the views' generator. history holds the loss per step and the
    share of each step's views already classified as the target.
    """

    def __init__(self, target: int, eps: float = 16 / 255, steps: int = 200, samples: int = 16,
                 lr: float | None = None, seed: int = 0) -> None:
        if int(steps) != steps or steps < 1 or int(samples) != samples or samples < 1:
            raise AdvlabError(f"steps and samples must be positive integers, got {steps} and {samples}")
        self.target = int(target)
        self.eps = check_range(eps, "texture eps (Linf)", 0.0, 1.0)
        self.steps, self.samples = int(steps), int(samples)
        self.lr = check_range(lr, "learning rate", 0.0, 10.0, lo_open=True) if lr is not None else \
            max(self.eps, 1e-3) / 8
        self.seed = seed
        self.cost = Cost()
        self.history: list[dict] = []

    def fit(self, model: nn.Module, renderer: Renderer, texture: torch.Tensor,
            fixed_views: dict[str, torch.Tensor] | None = None, progress: bool = False) -> torch.Tensor:
        check_texture(texture, renderer.channels)
        if texture.dim() != 3:
            raise AdvlabError(f"texture must be one (C, H, W) image, got shape {tuple(texture.shape)}")
        generator = torch.Generator().manual_seed(self.seed)
        original = texture.detach()
        delta = torch.zeros_like(original, requires_grad=True)
        optimizer = torch.optim.Adam([delta], lr=self.lr)
        with attack_mode(model):
            for _ in tqdm(range(self.steps), desc="texture EOT", disable=not progress, leave=False):
                views = fixed_views if fixed_views is not None else renderer.sample(self.samples, generator)
                images = renderer((original + delta).clamp(0, 1), views)
                logits = model(images)
                target = torch.full((len(images),), self.target, device=images.device)
                loss = F.cross_entropy(logits, target)  # minus the mean log-probability of the target
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                with torch.no_grad():  # project onto the eps-ball around the texture, inside [0, 1]
                    delta.clamp_(-self.eps, self.eps)
                    delta.copy_((original + delta).clamp(0, 1) - original)
                self.cost.forward += len(images)
                self.cost.backward += len(images)
                self.history.append({"loss": loss.item(),
                                     "target_share": (logits.argmax(1) == target).float().mean().item()})
        return (original + delta.detach()).clamp(0, 1)


@torch.no_grad()
def viewpoint_success(model: nn.Module, renderer: Renderer, texture: torch.Tensor, target: int, true_class: int,
                      views: int = 500, seed: int = 1, batch_size: int = 100) -> dict:
    """The paper's measurement: of `views` random viewpoints drawn with this seed (held out when the
    seed and the renderer's backgrounds differ from the optimization's), the share classified as
    the target and as the true class, and the per-view predictions."""
    check_texture(texture, renderer.channels)
    generator = torch.Generator().manual_seed(seed)
    preds = []
    with eval_mode(model):
        for start in range(0, views, batch_size):
            sampled = renderer.sample(min(batch_size, views - start), generator)
            preds.append(model(renderer(texture, sampled)).argmax(1).cpu())
    preds = torch.cat(preds)
    return {"target_rate": (preds == target).float().mean().item(),
            "true_rate": (preds == true_class).float().mean().item(), "views": views, "predictions": preds}


@torch.no_grad()
def rotation_curve(model: nn.Module, renderer: Renderer, texture: torch.Tensor, target: int, true_class: int,
                   angles: list[float], per_angle: int = 20, seed: int = 2) -> list[dict]:
    """Share classified as target / true class at each yaw angle (degrees about the vertical axis),
    each angle over `per_angle` random distances, shifts, lights, backgrounds and noise."""
    rows = []
    for angle in angles:
        generator = torch.Generator().manual_seed(seed)  # the same other conditions at every angle
        with eval_mode(model):
            pred = model(renderer(texture, turntable_views(renderer, angle, per_angle, generator))).argmax(1)
        rows.append({"angle": float(angle), "target_rate": (pred == target).float().mean().item(),
                     "true_rate": (pred == true_class).float().mean().item()})
    return rows


def texture_from_image(image: torch.Tensor, height: int = 32, width: int = 64) -> torch.Tensor:
    """A texture (C, height, width) that shows `image` (C, h, w) twice around the object's
    longitude, once on each side, so that the object looks like the picture from the front and the back."""
    check_texture(image)
    if image.dim() != 3:
        raise AdvlabError(f"expected one image (C, H, W), got shape {tuple(image.shape)}")
    half = F.interpolate(image[None], size=(height, width // 2), mode="bilinear", align_corners=False,
                         antialias=True)[0]
    return torch.cat([half, half], -1).clamp(0, 1)


def compare_textures(model: nn.Module, train_renderer: Renderer, test_renderer: Renderer, texture: torch.Tensor,
                     target: int, true_class: int, eps: float, steps: int = 200, samples: int = 16,
                     lr: float | None = None, views: int = 500, angles: list[float] | None = None,
                     per_angle: int = 20, seed: int = 0, progress: bool = False) -> dict:
    """The paper's comparison on held-out viewpoints: the original texture, a texture optimized on
    one fixed view (the canonical front view over the first training background), and the EOT
    texture, all under the same eps. train_renderer's backgrounds and views feed the optimization;
    test_renderer's (other backgrounds, another seed) feed every measurement."""
    single = TextureEOT(target, eps, steps, samples=1, lr=lr, seed=seed)
    textures = {"original": texture.detach()}
    textures["single view"] = single.fit(model, train_renderer, texture, fixed_views=fixed_view(train_renderer, 1),
                                         progress=progress)
    eot = TextureEOT(target, eps, steps, samples, lr=lr, seed=seed)
    textures["EOT"] = eot.fit(model, train_renderer, texture, progress=progress)
    angles = angles if angles is not None else list(range(0, 361, 15))
    rows, curves = [], {}
    for name, tex in textures.items():
        measured = viewpoint_success(model, test_renderer, tex, target, true_class, views, seed=seed + 1000)
        with torch.no_grad():
            fixed_pred = model(train_renderer(tex, fixed_view(train_renderer, 1))).argmax(1).item()
        rows.append({"texture": name, "target_rate": measured["target_rate"], "true_rate": measured["true_rate"],
                     "views": views, "fixed_view_prediction": fixed_pred,
                     "linf_change": (tex - texture).abs().max().item()})
        curves[name] = rotation_curve(model, test_renderer, tex, target, true_class, angles, per_angle,
                                      seed=seed + 2000)
    return {"rows": rows, "curves": curves, "textures": textures,
            "cost": {"single view": single.cost.to_dict(), "EOT": eot.cost.to_dict()},
            "history": {"single view": single.history, "EOT": eot.history}}
