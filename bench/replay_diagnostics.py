"""Replays the accuracy-based masking checks (advlab.evaluation.diagnostics: the single-step gap and
the stronger-attack check) on recorded `advlab evaluate --json` results, and prints the saturation
statistics those results recorded, one line per model and eps:

    PYTHONPATH=src python bench/replay_diagnostics.py bench/results/defenses/*.json

The recorded JSON holds per-attack accuracies, not per-sample masks, so the iterative attacks' joint
accuracy is taken as the recorded worst case (which also counts FGSM: at most the iterative one, so a
check that stays silent here stays silent on the masks too).
"""

from __future__ import annotations

import json
import sys

import torch

from advlab.evaluation.diagnostics import (
    FIRST_ORDER_REACH,
    SATURATED_SHARE,
    AttackOutcome,
    check_single_step_gap,
    check_stronger_attack,
)


def mask(n: int, share: float) -> torch.Tensor:
    m = torch.zeros(n, dtype=torch.bool)
    m[:round(share * n)] = True
    return m


def replay(path: str) -> None:
    data = json.load(open(path))
    for ev in data["evaluations"].values():
        n, acc = ev["n"], ev["robust_accuracy"]
        outcomes = {}
        for i, e in enumerate(ev["eps"]):
            outcomes[e] = [AttackOutcome("FGSM", mask(n, acc["fgsm"][i]), single_step=True),
                           AttackOutcome("PGD-CE", mask(n, acc["pgd"][i])),
                           AttackOutcome("PGD-CW", mask(n, acc["cw"][i]), alone=True)]
            # the joint mask of the iterative attacks: the recorded worst case (nested masks)
            outcomes[e].append(AttackOutcome("worst case", mask(n, ev["worst_case"][i]), alone=False))
        gap = check_single_step_gap(outcomes, mask(n, ev["clean_accuracy"]))
        stronger = [check_stronger_attack([o for o in outs if o.name != "worst case"] +
                                          [AttackOutcome("worst case", outs[-1].robust, single_step=True)], e)
                    for e, outs in outcomes.items()]
        grads = next((d["evidence"] for d in ev["diagnostics"] if d["name"] == "vanishing or saturated gradients"), {})
        saturated = (grads.get("saturated_softmax", 0) > SATURATED_SHARE
                     and max(ev["eps"]) * grads.get("median_gradient_l1", 1) < FIRST_ORDER_REACH)
        print(f"{path}: clean {ev['clean_accuracy']:.3f}; "
              + "; ".join(f"eps {e:g}: FGSM {acc['fgsm'][i]:.3f} PGD {acc['pgd'][i]:.3f} CW {acc['cw'][i]:.3f} "
                          f"worst {ev['worst_case'][i]:.3f}" for i, e in enumerate(ev["eps"])))
        fired_stronger = [st.message for st in stronger if st.fired]
        one_hot, norm = grads.get("saturated_softmax", float("nan")), grads.get("median_gradient_l1", float("nan"))
        print(f"    single-step gap {'FIRED' if gap.fired else 'silent'}; "
              f"stronger attack {'FIRED (' + '; '.join(fired_stronger) + ')' if fired_stronger else 'silent'}; "
              f"saturation {'FIRED' if saturated else 'silent'} (one-hot softmax {one_hot:.3f}, "
              f"median CE gradient L1 {norm:.2e}, all samples)")


if __name__ == "__main__":
    for p in sys.argv[1:]:
        replay(p)
