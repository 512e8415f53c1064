"""Render bench results as the Markdown tables of docs/benchmarks.md.

    python bench/whitebox_report.py [RESULT.json ...]   (default: bench/results/whitebox.json)

With several files, sections of later files replace those of earlier ones (a rerun of some sections
with ``bench/run_whitebox.sh --only pgd,floor --out ...``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def main(paths: list[str] | None = None) -> str:
    r: dict = {}
    for path in paths or [str(ROOT / "bench" / "results" / "whitebox.json")]:
        part = json.loads(Path(path).read_text())
        if r:
            part.pop("settings", None)
            part.pop("wall_seconds", None)
        r.update(part)
    out = [f"Run: {r['settings']}, {r['threads']} thread(s), wall {r['wall_seconds']:.0f} s; versions "
           f"{r['versions']}; clean accuracy of the first images {pct(r['clean_accuracy_first_n'])}."]
    for sec, title in (("fgsm", "FGSM"), ("pgd", "PGD Linf, step 0.01, 40 steps, random start")):
        if sec not in r:
            continue
        rows = []
        for eps, contenders in r[sec].items():
            for name, m in contenders.items():
                if name.startswith("floor"):
                    rows.append([eps, name, "", "", "", f"{m['seconds']:.2f}", "1.00"])
                    continue
                rows.append([eps, name, pct(m["robust_accuracy"]), pct(m["success_rate"]),
                             f"{m['median_l2_of_successes']:.3f}", f"{m['seconds']:.2f}",
                             f"{m.get('x_floor', m['seconds'] / contenders[next(iter(contenders))]['seconds']):.2f}"])
        out.append(f"\n**{title}**\n\n" + table(["eps", "library", "robust acc.", "success", "median L2 of successes",
                                                 "CPU s", "x floor"], rows))
    if "pgd_floor" in r:
        f = r["pgd_floor"]
        rows = [[k, f"{v:.2f}", f"{v / f['seconds']['floor']:.3f}"] for k, v in f["seconds"].items()]
        out.append(f"\n**PGD-40 against its floor** ({f['n']} images, best of {f['rounds']} interleaved rounds)\n\n"
                   + table(["contender", "CPU s", "x floor"], rows))
    if "robust_eval" in r:
        e = r["robust_eval"]
        rows = [[eps, pct(e["advlab"][str(eps)]), pct(e["torchattacks"][str(eps)])] for eps in e["eps"]]
        out.append("\n**Robust-accuracy evaluation** (PGD-40 at every eps)\n\n"
                   + table(["eps", "advlab robust_accuracy", "torchattacks PGD"], rows)
                   + f"\n\nadvlab {e['advlab_s']:.2f} CPU s, torchattacks {e['torchattacks_s']:.2f} CPU s: "
                   f"**{e['speedup']:.2f}x** faster.")
    for sec, title in (("deepfool", "DeepFool L2 (50 steps, overshoot 0.02, 10 candidates)"),
                       ("cw", "C&W L2 (100 steps, c = 1, lr 0.01, kappa 0, one search step)")):
        if sec not in r:
            continue
        rows = [[name, m["n"], pct(m["success_rate"]), m.get("all_zero_images_returned", 0),
                 f"{m['median_l2_of_successes']:.3f}", f"{m['seconds']:.2f}", f"{m['images_per_s']:.2f}"]
                for name, m in r[sec].items()]
        out.append(f"\n**{title}**\n\n" + table(["library", "images", "success", "all-zero images returned",
                                                 "median L2 of successes", "CPU s", "images per CPU s"], rows))
    text = "\n".join(out)
    print(text)
    return text


if __name__ == "__main__":
    main(sys.argv[1:] or None)
