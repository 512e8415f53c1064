"""Print the Markdown table of docs/evaluation.md from the JSON files of bench/autoattack_compare.py (and
bench/apgd_vs_torchattacks.py) in one folder.

    python bench/autoattack_table.py bench/results/table
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results/table")
    print("| model | eps | images | clean | AutoAttack | advlab | broken only by advlab / AutoAttack | gradient calls "
          "AutoAttack | advlab | ratio | CPU ratio | advlab's calls: APGD-CE / APGD-T / FAB-T |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for path in sorted(folder.glob("*.json")):
        d = json.loads(path.read_text())
        if "autoattack" not in d or "advlab" not in d:
            continue
        a, o = d["autoattack"], d["advlab"]
        per = o["per_attack"]
        calls = " / ".join(f"{per[m]['backward']:,}" for m in ("APGD-CE", "APGD-T", "FAB-T", "APGD-DLR") if m in per)
        dis = d["disagreement"]
        print(f"| {path.stem} | {d['eps']:g} | {d['n']} | {pct(d['clean_accuracy'])} | {pct(a['robust_accuracy'])} "
              f"| {pct(o['robust_accuracy'])} | {dis['broken_by_advlab_only']} / {dis['broken_by_autoattack_only']} "
              f"| {a['gradient_calls']:,} | {o['gradient_calls']:,} "
              f"| {d['ratios']['gradient_calls_advlab_over_autoattack']:.3f} "
              f"| {d['ratios']['cpu_advlab_over_autoattack']:.2f} | {calls} |")
    runs = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    seeds = [r for r in runs if "mean_torchattacks" in r]
    if seeds:
        print("\n| model | eps | images | seeds | advlab APGD-CE | torchattacks APGD "
              "| per seed (advlab / torchattacks) |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for r in seeds:
            per = ", ".join(f"{pct(x['advlab'])} / {pct(x['torchattacks'])}" for x in r["runs"])
            print(f"| {Path(r['model']).stem} | {r['eps']:g} | {r['n']} | {len(r['runs'])} | {pct(r['mean_advlab'])} "
                  f"| {pct(r['mean_torchattacks'])} | {per} |")


if __name__ == "__main__":
    main()
