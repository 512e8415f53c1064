"""Attacks: white-box, black-box (oracle only), autoencoder and physical-world.

White-box attacks (this package's own modules) are configured once and called on a batch:
``PGD(eps=0.3, steps=40, step_size=0.01)(model, x, y) -> AttackResult``.
"""

from advlab.attacks.apgd import APGD, APGDTargeted
from advlab.attacks.base import Attack, AttackResult, Cost, ThreatModel, check_norm
from advlab.attacks.cw import CarliniWagnerL2
from advlab.attacks.deepfool import DeepFool
from advlab.attacks.fab import FAB
from advlab.attacks.fgsm import FGSM
from advlab.attacks.fooling import FoolingImages, FoolingResult
from advlab.attacks.lbfgs import LBFGS
from advlab.attacks.mifgsm import MIFGSM
from advlab.attacks.pgd import BIM, PGD
from advlab.attacks.registry import ATTACKS, MINIMAL_NORM_ATTACKS, WHITEBOX_ATTACKS, AttackSpec, build_attack

CW = CarliniWagnerL2

__all__ = [
    "APGD",
    "ATTACKS",
    "FAB",
    "APGDTargeted",
    "BIM",
    "CW",
    "FGSM",
    "LBFGS",
    "MIFGSM",
    "MINIMAL_NORM_ATTACKS",
    "PGD",
    "WHITEBOX_ATTACKS",
    "Attack",
    "AttackResult",
    "AttackSpec",
    "CarliniWagnerL2",
    "Cost",
    "DeepFool",
    "FoolingImages",
    "FoolingResult",
    "ThreatModel",
    "build_attack",
    "check_norm",
]
