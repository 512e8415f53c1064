"""The defenses table of docs/defenses.md from the JSON files bench/run_defenses.sh writes.

    .venv/bin/python bench/defenses_table.py bench/results/defenses --figure docs/figures/defenses_comparison.png

Prints one markdown table (clean; FGSM, PGD, C&W-margin PGD and worst case at each eps; the
torchattacks PGD figure on the same images; the diagnostics that fired) and draws worst-case robust
accuracy against eps, one curve per model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from advlab.report.attack_figures import robust_curve_figure  # noqa: E402

ORDER = ["standard", "augment", "distill", "pgd", "fast"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder")
    parser.add_argument("--figure", default=None)
    args = parser.parse_args()
    folder = Path(args.folder)
    names = [n for n in ORDER if (folder / f"{n}.json").is_file()]
    curves = {}
    print("| model | clean | eps | FGSM | PGD (CE) | PGD (C&W margin) | worst case | torchattacks PGD | "
          "diagnostics fired |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in names:
        report = json.loads((folder / f"{name}.json").read_text())
        (ev,) = report["evaluations"].values()
        peer_file = folder / f"{name}_peer.json"
        peer = {row["eps"]: row["torchattacks_pgd"] for row in json.loads(peer_file.read_text())["rows"]} \
            if peer_file.is_file() else {}
        fired = ", ".join(d["name"] for d in ev["diagnostics"] if d["fired"]) or "none"
        acc = ev["robust_accuracy"]
        clean = f"{ev['clean_accuracy']:.2%}"
        for i, eps in enumerate(ev["eps"]):
            first = i == 0
            peer_cell = f"{peer[eps]:.2%}" if eps in peer else "-"
            print(f"| {name if first else ''} | {clean if first else ''} | {eps:g} | "
                  f"{acc['fgsm'][i]:.2%} | {acc['pgd'][i]:.2%} | {acc['cw'][i]:.2%} | **{ev['worst_case'][i]:.2%}** | "
                  f"{peer_cell} | {fired if first else ''} |")
        curves[name] = ([0.0, *ev["eps"]], [ev["clean_accuracy"], *ev["worst_case"]])
    n = json.loads((folder / f"{names[0]}.json").read_text())["config"]["n"] if names else 0
    if args.figure and curves:
        robust_curve_figure(curves, Path(args.figure), "linf",
                            f"MNIST mnist_cnn: worst-case robust accuracy ({n} test images)")
        print(f"\nfigure: {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
