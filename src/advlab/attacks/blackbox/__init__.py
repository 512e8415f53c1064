"""Black-box attacks: they see only an oracle (probabilities or labels), and every query is counted.

``Square(eps=0.3)(LocalOracle(model), x, y) -> AttackResult`` with ``result.cost.queries`` filled;
``HttpOracle("http://127.0.0.1:8000")`` queries a model served by ``advlab serve`` instead.
"""

from advlab.attacks.blackbox.base import BlackBoxAttack, QueryRun, margin_loss, success_within
from advlab.attacks.blackbox.hopskipjump import HopSkipJump
from advlab.attacks.blackbox.nes import NES, nes_gradient
from advlab.attacks.blackbox.oracle import BudgetExhausted, HttpOracle, LocalOracle, Oracle, model_answers
from advlab.attacks.blackbox.square import Square
from advlab.attacks.blackbox.zoo import ZOO, finite_difference_gradient

BLACKBOX_ATTACKS = {"square": Square, "nes": NES, "zoo": ZOO, "hopskipjump": HopSkipJump}

__all__ = ["BLACKBOX_ATTACKS", "NES", "ZOO", "BlackBoxAttack", "BudgetExhausted", "HopSkipJump", "HttpOracle",
           "LocalOracle", "Oracle", "QueryRun", "Square", "finite_difference_gradient", "margin_loss",
           "model_answers", "nes_gradient", "success_within"]
