"""What each panel of the lab computes, as plain functions of a model and an image.

Every attack, certificate, trigger and simulation here is the library's own (advlab.attacks,
advlab.defenses.smoothing, advlab.poisoning, advlab.detection); these functions only choose the
settings a panel offers and turn results into numbers and pictures for the page. They run in the
lab's worker threads, on the job's private copy of the model.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from advlab.attacks import MINIMAL_NORM_ATTACKS, FoolingImages, build_attack
from advlab.attacks.base import AttackResult
from advlab.attacks.physical.simulate import PrintPhotoSimulation
from advlab.defenses.smoothing import ABSTAIN, Smooth
from advlab.errors import AdvlabError
from advlab.lab.images import image_url, magnified_perturbation

SEEDED = ("pgd",)  # attacks with a random start take the panel's seed


@torch.no_grad()
def top_classes(model: nn.Module, x: torch.Tensor, classes: list[str], k: int = 5) -> list[dict]:
    """The k most probable classes of one image (C, H, W): index, name and probability."""
    probs = model(x.unsqueeze(0)).double().softmax(1)[0]
    values, indices = probs.topk(min(k, len(probs)))
    return [{"index": int(i), "name": classes[int(i)], "probability": float(p)} for p, i in zip(values, indices,
                                                                                               strict=True)]


@torch.no_grad()
def predicted(model: nn.Module, x: torch.Tensor) -> int:
    return int(model(x.unsqueeze(0)).argmax(1))


def make_attack(name: str, eps: float, norm: str, steps: int | None, seed: int):
    """The library's attack by name (advlab.attacks.build_attack), with the seed where it has one."""
    kwargs = {"seed": seed} if name in SEEDED else {}
    return build_attack(name, eps=eps, norm=norm, steps=steps, **kwargs)


def run_attack(model: nn.Module, x: torch.Tensor, y: int, name: str, eps: float, norm: str, steps: int | None,
               seed: int, target: int | None) -> AttackResult:
    attack = make_attack(name, eps, norm, steps, seed)
    label = torch.tensor([y], device=x.device)
    return attack(model, x.unsqueeze(0), label, target=target)


def whitebox(model: nn.Module, x: torch.Tensor, y: int, classes: list[str], name: str, eps: float, norm: str,
             steps: int | None = None, seed: int = 0, target: int | None = None) -> tuple[dict, torch.Tensor]:
    """Attack one image; returns the panel's numbers and pictures, and the adversarial image."""
    if target is not None and not 0 <= target < len(classes):
        raise AdvlabError(f"target class must be in 0..{len(classes) - 1}, got {target}")
    result = run_attack(model, x, y, name, eps, norm, steps, seed, target)
    adv = result.adv[0].detach()
    perturbation, factor = magnified_perturbation(adv - x)
    numbers = {
        "attack": name, "norm": norm, "eps": None if name in MINIMAL_NORM_ATTACKS else eps, "steps": steps,
        "seed": seed if name in SEEDED else None, "label": y, "label_name": classes[y],
        "target": target, "target_name": None if target is None else classes[target],
        "clean_prediction": int(result.clean_pred[0]), "adversarial_prediction": int(result.adv_pred[0]),
        "adversarial_prediction_name": classes[int(result.adv_pred[0])], "success": bool(result.success[0]),
        "norms": {k: float(v[0]) for k, v in result.norms.items()}, "cost": result.cost.to_dict(),
        "top5_clean": top_classes(model, x, classes), "top5_adversarial": top_classes(model, adv, classes),
        "magnification": factor,
    }
    pictures = {"clean": image_url(x), "perturbation": image_url(perturbation), "adversarial": image_url(adv)}
    return {**numbers, "images": pictures}, adv


def robustness_curve(model: nn.Module, x: torch.Tensor, y: int, name: str, norm: str, eps_max: float, points: int,
                     steps: int | None = None, seed: int = 0, progress=None) -> dict:
    """This one image under the attack at `points` eps values from 0 to eps_max: the prediction and
    the probability of the true class at each."""
    if name in MINIMAL_NORM_ATTACKS:
        raise AdvlabError(f"{name} finds its own perturbation size; the curve over eps needs a bounded attack "
                          "(fgsm, bim, pgd, mifgsm)")
    if points < 2:
        raise AdvlabError("the curve needs at least 2 points")
    rows = []
    for k, eps in enumerate(np.linspace(0.0, eps_max, points)):
        eps = float(eps)
        if eps == 0:
            adv = x
        else:
            adv = run_attack(model, x, y, name, eps, norm, steps, seed, None).adv[0]
        with torch.no_grad():
            probs = model(adv.unsqueeze(0)).double().softmax(1)[0]
        rows.append({"eps": eps, "prediction": int(probs.argmax()), "true_class_probability": float(probs[y]),
                     "correct": int(probs.argmax()) == y})
        if progress is not None:
            progress((k + 1) / points)
    broken = [r["eps"] for r in rows if not r["correct"]]
    return {"attack": name, "norm": norm, "label": y, "points": rows,
            "smallest_eps_that_fools": min(broken) if broken else None}


def fooling(model: nn.Module, shape: tuple[int, int, int], classes: list[str], target: int, eps: float, steps: int,
            seed: int = 0) -> dict:
    """Noise pushed toward every class (advlab.attacks.FoolingImages, one image per class); the
    chosen class's image and confidence, and the share of classes reached above 50%."""
    if not 0 <= target < len(classes):
        raise AdvlabError(f"target class must be in 0..{len(classes) - 1}, got {target}")
    result = FoolingImages(eps=eps, steps=steps, seed=seed)(model, shape, num_classes=len(classes), per_class=1)
    row = int(torch.nonzero(result.target == target)[0])
    image = result.images[row]
    start = FoolingImages(eps=eps, steps=steps, seed=seed).start(len(classes), shape, image.device)[row]
    return {"target": target, "target_name": classes[target], "confidence": float(result.confidence[row]),
            "prediction": int(result.predicted[row]), "prediction_name": classes[int(result.predicted[row])],
            "fooled": bool(result.fooled[row]), "threshold": result.threshold, "eps": eps, "steps": steps,
            "share_of_classes_fooled": result.share, "cost": result.cost.to_dict(),
            "top5": top_classes(model, image, classes),
            "images": {"noise": image_url(start), "fooling": image_url(image)}}


class SoftSmoothed(nn.Module):
    """log E_delta softmax f(x + delta): the smoothed classifier's soft version, which an attack on g
    must climb (Salman et al. 2019, SmoothAdv); Smooth.noise_probabilities estimates it."""

    def __init__(self, smooth: Smooth, samples: int, seed: int) -> None:
        super().__init__()
        self.smooth, self.samples, self.seed = smooth, samples, seed
        self.base = smooth.base_classifier  # registered, so parameters() and modes reach it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        generator = torch.Generator(device=x.device).manual_seed(self.seed)
        return self.smooth.noise_probabilities(x, self.samples, generator).clamp_min(1e-12).log()


def certify(model: nn.Module, x: torch.Tensor, y: int, classes: list[str], sigma: float, n0: int, n: int,
            alpha: float = 0.001, seed: int = 0, attack_steps: int = 20, attack_samples: int = 16,
            batch_size: int = 1000) -> dict:
    """Cohen et al.'s CERTIFY for this image (advlab.defenses.smoothing.Smooth), the class counts
    behind it, PREDICT, and an L2 PGD attack on the smoothed classifier inside the certified radius,
    whose result the smoothed classifier must still give the certified class (Theorem 1)."""
    smooth = Smooth(model, len(classes), sigma)
    recorded: list[np.ndarray] = []
    sample_counts = smooth.sample_counts

    def recording(*args, **kwargs):
        counts = sample_counts(*args, **kwargs)
        recorded.append(counts)
        return counts

    smooth.sample_counts = recording  # the counts CERTIFY itself drew, for the histogram
    generator = torch.Generator(device=x.device).manual_seed(seed)
    certified, radius = smooth.certify(x, n0, n, alpha, batch_size, generator)
    smooth.sample_counts = sample_counts
    counts0, counts = recorded
    prediction = smooth.predict(x, n, alpha, batch_size, generator)
    out = {"sigma": sigma, "n0": n0, "n": n, "alpha": alpha, "seed": seed, "label": y, "label_name": classes[y],
           "certified_class": certified, "certified_class_name": None if certified == ABSTAIN else classes[certified],
           "radius": radius, "abstain": certified == ABSTAIN, "prediction": prediction,
           "base_prediction": predicted(model, x),
           "selection_counts": [int(c) for c in counts0], "counts": [int(c) for c in counts], "attack": None}
    if certified != ABSTAIN and radius > 0:
        soft = SoftSmoothed(smooth, attack_samples, seed)
        attack = build_attack("pgd", eps=radius, norm="l2", steps=attack_steps, seed=seed)
        result = attack(soft, x.unsqueeze(0), torch.tensor([certified], device=x.device))
        adv = result.adv[0]
        after = smooth.predict(adv, n, alpha, batch_size, generator)
        out["attack"] = {"name": "pgd", "norm": "l2", "eps": radius, "steps": attack_steps,
                         "samples_per_step": attack_samples, "l2": float(result.norms["l2"][0]),
                         "smoothed_prediction": after,
                         "smoothed_prediction_name": None if after == ABSTAIN else classes[after],
                         "base_prediction": predicted(model, adv),
                         "held": after in (certified, ABSTAIN),
                         "image": image_url(adv)}
    return out


def physical(model: nn.Module, adv: torch.Tensor, y: int, classes: list[str], draws: int, seed: int = 0,
             target: int | None = None) -> dict:
    """`draws` print-and-photo simulations of the adversarial image (PrintPhotoSimulation, one draw
    per copy) and whether each still fools the model."""
    photos = PrintPhotoSimulation()(adv.unsqueeze(0).repeat(draws, 1, 1, 1), seed=seed)
    with torch.no_grad():
        probs = model(photos).double().softmax(1)
    rows = []
    for k in range(draws):
        pred = int(probs[k].argmax())
        fools = pred == target if target is not None else pred != y
        rows.append({"prediction": pred, "prediction_name": classes[pred], "confidence": float(probs[k, pred]),
                     "fools": fools, "image": image_url(photos[k])})
    still = sum(r["fools"] for r in rows)
    return {"draws": rows, "still_fooling": still, "n": draws, "seed": seed, "label": y,
            "simulation": PrintPhotoSimulation().to_dict(), "share_still_fooling": still / draws if draws else math.nan}
