"""Attacks by name, for the CLI, the lab and the evaluation layer: a table of white-box attack
specifications (class, the options its name fixes, the common options it takes, its norms), and the
black-box ones (advlab.attacks.blackbox.BLACKBOX_ATTACKS, which take eps, norm, max_queries, seed and
their own options).

Defaults live in the attack classes only; ``build_attack`` passes an option on only when the caller
gave it. Bounded attacks take (eps, norm); minimal-perturbation attacks take no eps and report
per-sample norms.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from advlab.attacks.apgd import APGD, APGDTargeted
from advlab.attacks.base import NORMS, Attack, check_norm
from advlab.attacks.blackbox import BLACKBOX_ATTACKS, BlackBoxAttack
from advlab.attacks.cw import CarliniWagnerL2
from advlab.attacks.deepfool import DeepFool
from advlab.attacks.fab import FAB
from advlab.attacks.fgsm import FGSM
from advlab.attacks.lbfgs import LBFGS
from advlab.attacks.mifgsm import MIFGSM
from advlab.attacks.pgd import BIM, PGD
from advlab.errors import AdvlabError

#: the options build_attack names; an attack receives those in its spec's ``takes``
COMMON_OPTIONS = ("eps", "norm", "steps", "step_size", "early_stop", "restarts", "loss", "seed")


@dataclass(frozen=True)
class AttackSpec:
    """One white-box attack: the class, the keyword arguments its name fixes (overridable), which of
    COMMON_OPTIONS it takes, and the norms it supports."""

    make: type[Attack]
    takes: tuple[str, ...]
    fixed: dict = field(default_factory=dict)
    norms: tuple[str, ...] = NORMS

    @property
    def bounded(self) -> bool:
        return "eps" in self.takes


ATTACKS: dict[str, AttackSpec] = {
    "fgsm": AttackSpec(FGSM, ("eps", "norm", "loss")),
    "bim": AttackSpec(BIM, ("eps", "norm", "steps", "step_size", "early_stop", "loss")),
    "pgd": AttackSpec(PGD, ("eps", "norm", "steps", "step_size", "early_stop", "restarts", "loss", "seed")),
    "mifgsm": AttackSpec(MIFGSM, ("eps", "norm", "steps", "step_size", "loss", "seed")),
    "apgd-ce": AttackSpec(APGD, ("eps", "norm", "steps", "restarts", "seed"), {"loss": "ce"}),
    "apgd-dlr": AttackSpec(APGD, ("eps", "norm", "steps", "restarts", "seed"), {"loss": "dlr"}),
    "apgd-t": AttackSpec(APGDTargeted, ("eps", "norm", "steps", "restarts", "seed")),
    "deepfool": AttackSpec(DeepFool, ("norm", "steps")),
    "cw": AttackSpec(CarliniWagnerL2, ("steps",), norms=("l2",)),
    "lbfgs": AttackSpec(LBFGS, (), norms=("l2",)),
    "fab": AttackSpec(FAB, ("norm", "steps", "restarts", "seed")),
    "fab-t": AttackSpec(FAB, ("norm", "steps", "restarts", "seed"), {"targets": 9}),
}

WHITEBOX_ATTACKS = tuple(ATTACKS)
MINIMAL_NORM_ATTACKS = tuple(name for name, spec in ATTACKS.items() if not spec.bounded)
L2_ONLY = tuple(name for name, spec in ATTACKS.items() if spec.norms == ("l2",))


def build_attack(name: str, eps: float = 0.3, norm: str = "linf", steps: int | None = None,
                 step_size: float | None = None, early_stop: bool = False, restarts: int | None = None,
                 loss: str | None = None, seed: int | None = None, **kwargs) -> Attack | BlackBoxAttack:
    """An attack configured from CLI-style arguments; unknown names and bad norms are user errors.
    Common options the attack does not take are ignored (eps for DeepFool); None leaves the class's
    default; further keyword arguments go to the class as they are."""
    if name in BLACKBOX_ATTACKS:
        return BLACKBOX_ATTACKS[name](eps=eps, norm=norm, **({} if seed is None else {"seed": seed}), **kwargs)
    spec = ATTACKS.get(name)
    if spec is None:
        raise AdvlabError(f"unknown attack {name!r}; choose one of {', '.join(WHITEBOX_ATTACKS)}")
    check_norm(norm)
    if norm not in spec.norms:
        raise AdvlabError(f"attack {name!r} is an {'/'.join(n.upper() for n in spec.norms)} attack; pass --norm "
                          f"{spec.norms[0]}")
    given = {"eps": eps, "norm": norm, "steps": steps, "step_size": step_size, "early_stop": early_stop,
             "restarts": restarts, "loss": loss, "seed": seed}
    options = {k: v for k, v in given.items() if k in spec.takes and v is not None}
    return spec.make(**{**spec.fixed, **options, **kwargs})
