"""Attacks by name, for the CLI and the evaluation layer: the white-box ones and the black-box ones
(advlab.attacks.blackbox.BLACKBOX_ATTACKS, which take eps, norm, max_queries, seed and their own options).

Bounded attacks take (eps, norm); minimal-perturbation attacks ignore eps and report per-sample norms.
"""

from __future__ import annotations

from advlab.attacks.apgd import APGD, APGDTargeted
from advlab.attacks.base import Attack
from advlab.attacks.blackbox import BLACKBOX_ATTACKS, BlackBoxAttack
from advlab.attacks.cw import CarliniWagnerL2
from advlab.attacks.deepfool import DeepFool
from advlab.attacks.fab import FAB
from advlab.attacks.fgsm import FGSM
from advlab.attacks.lbfgs import LBFGS
from advlab.attacks.mifgsm import MIFGSM
from advlab.attacks.pgd import BIM, PGD
from advlab.errors import AdvlabError

WHITEBOX_ATTACKS = ("fgsm", "bim", "pgd", "mifgsm", "apgd-ce", "apgd-dlr", "apgd-t", "deepfool", "cw", "lbfgs",
                    "fab", "fab-t")
MINIMAL_NORM_ATTACKS = ("deepfool", "cw", "lbfgs", "fab", "fab-t")
L2_ONLY = ("cw", "lbfgs")


def build_attack(name: str, eps: float = 0.3, norm: str = "linf", steps: int | None = None,
                 step_size: float | None = None, early_stop: bool = False, **kwargs) -> Attack | BlackBoxAttack:
    """An attack configured from CLI-style arguments; unknown names and bad norms are user errors."""
    if name in BLACKBOX_ATTACKS:
        return BLACKBOX_ATTACKS[name](eps=eps, norm=norm, **kwargs)
    if name not in WHITEBOX_ATTACKS:
        raise AdvlabError(f"unknown attack {name!r}; choose one of {', '.join(WHITEBOX_ATTACKS)}")
    if name in L2_ONLY and norm != "l2":
        raise AdvlabError(f"attack {name!r} is an L2 attack; pass --norm l2")
    if name == "fgsm":
        return FGSM(eps=eps, norm=norm, **kwargs)
    if name == "bim":
        return BIM(eps=eps, steps=steps, step_size=step_size, norm=norm, early_stop=early_stop, **kwargs)
    if name == "pgd":
        return PGD(eps=eps, steps=steps or 40, step_size=step_size, norm=norm, early_stop=early_stop, **kwargs)
    if name == "mifgsm":
        return MIFGSM(eps=eps, steps=steps or 10, step_size=step_size, norm=norm, **kwargs)
    if name in ("apgd-ce", "apgd-dlr"):
        return APGD(eps=eps, norm=norm, steps=steps or 100, loss=name.split("-")[1], **kwargs)
    if name == "apgd-t":
        return APGDTargeted(eps=eps, norm=norm, steps=steps or 100, **kwargs)
    if name == "fab":
        return FAB(norm=norm, steps=steps or 100, **kwargs)
    if name == "fab-t":
        return FAB(norm=norm, steps=steps or 100, targets=kwargs.pop("targets", 9), **kwargs)
    if name == "deepfool":
        return DeepFool(steps=steps or 50, norm=norm, **kwargs)
    if name == "cw":
        return CarliniWagnerL2(steps=steps or 100, **kwargs)
    return LBFGS(**kwargs)
