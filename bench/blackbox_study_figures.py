"""Figures of docs/blackbox.md from the JSON results of bench/substitute_study.py, bench/blackbox_peers.py
and `advlab substitute` run folders.

    PYTHONPATH=src .venv/bin/python bench/blackbox_study_figures.py --out docs/figures/blackbox
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
# Papernot et al. 2017, Table 1 (substitute accuracy, 150 MNIST test seeds): rounds 0 and 6
PAPER_ROUNDS = {0: 0.2486, 6: 0.8120}
LABELS = {"adam": "Adam 1e-3, batch 32 (advlab's old default)", "sgd": "SGD 1e-2, momentum 0.9, batch 128 (paper)",
          "sgd-random": "SGD, random-sign points (control)",
          "sgd-repeat": "SGD, seeds repeated, no new labels (control)",
          "adam-logits-tau3": "Adam, logit Jacobian, tau 3"}


def rounds_figure(path: Path, out: Path) -> None:
    data = json.loads(path.read_text())["rounds"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, label in LABELS.items():
        if name not in data:
            continue
        h = data[name]["history"]
        rounds = [r["round"] for r in h]
        axes[0].plot(rounds, [r["substitute_accuracy"] for r in h], "o-", label=label)
        axes[1].plot(rounds, [r["transfer_rate"] for r in h], "o-", label=label)
    axes[0].plot(list(PAPER_ROUNDS), list(PAPER_ROUNDS.values()), "k*", markersize=12,
                 label="Papernot et al. 2017, Table 1")
    axes[0].set_ylabel("substitute accuracy (test images)")
    axes[1].set_ylabel("FGSM eps 0.3 transfer rate to the oracle")
    for ax in axes:
        ax.set_xlabel("augmentation round rho (150 x 2^rho oracle labels)")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle("MLP substitute of mnist_cnn from 150 seeds, labels only")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def transfer_figure(paths: dict[str, Path], out: Path) -> None:
    fig, axes = plt.subplots(1, len(paths), figsize=(5.5 * len(paths), 4), squeeze=False)
    for ax, (title, path) in zip(axes[0], paths.items(), strict=True):
        data = json.loads(path.read_text())["transfer"]
        subs = list(dict.fromkeys(r["substitute"] for r in data["rows"]))
        attacks = list(dict.fromkeys(r["attack"] for r in data["rows"]))
        width = 0.8 / len(attacks)
        for k, attack in enumerate(attacks):
            vals = [next(r["transfer_rate"] for r in data["rows"] if r["substitute"] == s and r["attack"] == attack)
                    for s in subs]
            ax.bar([i + k * width for i in range(len(subs))], vals, width, label=attack)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(subs))], subs)
        ax.axhline(0.8, color="k", ls="--", lw=1, label="target 0.8")
        ax.set_ylim(0, 1)
        ax.set_ylabel("oracle misclassified (of its correct)")
        ax.set_title(f"{title}: {data['oracle_labels']} oracle labels")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def peers_figure(paths: dict[str, Path], out: Path) -> None:
    fig, axes = plt.subplots(len(paths), 3, figsize=(15, 3.8 * len(paths)), squeeze=False)
    for row, (title, path) in zip(axes, paths.items(), strict=True):
        data = json.loads(path.read_text())
        for attack, ax in (("square", row[0]), ("hopskipjump", row[1])):
            for library, style in (("advlab", "-"), ("art", "--")):
                for key, res in data["results"].items():
                    if key.startswith(f"{attack}/{library}/"):
                        budgets = [int(q) for q in res["success_at"]]
                        ax.plot(budgets, list(res["success_at"].values()), style, marker="o", ms=3,
                                label=f"{library} (median {res['median_queries']})")
            ax.set_xscale("log")
            ax.set_ylim(0, 1.02)
            ax.set_xlabel("queries per image")
            ax.set_ylabel(f"success at Linf {data['eps']}")
            ax.set_title(f"{title}: {attack}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        for library, style in (("advlab", "-"), ("art", "--")):
            for key, res in data["results"].items():
                if key.startswith(f"hopskipjump/{library}/"):
                    budgets = [int(q) for q in res["median_distance_at"]]
                    row[2].plot(budgets, list(res["median_distance_at"].values()), style, marker="o", ms=3,
                                label=library)
        row[2].set_xscale("log")
        row[2].set_xlabel("queries per image")
        row[2].set_ylabel("median Linf distance (adversarial)")
        row[2].set_ylim(0, 1)
        row[2].set_title(f"{title}: HopSkipJump distance")
        row[2].grid(alpha=0.3)
        row[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


HSJ_GRID = (100, 200, 300, 500, 750, 1000)


def hsj_table_row(label: str, first: np.ndarray, runs: int) -> str:
    ok = first > 0
    cells = " / ".join(f"{((first > 0) & (first <= q)).mean():.3f}" for q in HSJ_GRID)
    return (f"| {label} | {len(first)} ({runs} runs) | {cells} | {float(np.median(first[ok])):.0f} | "
            f"{float(first[ok].mean()):.0f} |")


def success_curve(first: np.ndarray) -> np.ndarray:
    """Success within q queries for q = 1 .. 1,000."""
    return np.asarray([((first > 0) & (first <= q)).mean() for q in range(1, 1001)])


def first_successes(paths: list[Path], library: str) -> np.ndarray:
    return np.asarray([f for path in paths for key, res in json.loads(path.read_text())["results"].items()
                       if key.startswith(f"hopskipjump/{library}/") for f in res["first_success"]])


def below_windows(ours: np.ndarray, theirs: np.ndarray) -> list[tuple[int, int]]:
    """The budgets (ranges from 1 to 1,000) at which our success curve lies below theirs."""
    below = np.nonzero(success_curve(ours) < success_curve(theirs) - 1e-12)[0] + 1
    ranges: list[tuple[int, int]] = []
    for q in below.tolist():
        if ranges and ranges[-1][1] == q - 1:
            ranges[-1] = (ranges[-1][0], q)
        else:
            ranges.append((q, q))
    return ranges


def hsj_variants_table(variants: dict[str, tuple[Path, str]]) -> None:
    """advlab's HopSkipJump settings on one image set (all runs of each file pooled), beside ART."""
    print("| variant | success within " + " / ".join(map(str, HSJ_GRID)) + " queries | median queries of the successes"
          " | mean success over budgets 1-1,000 |\n| --- | --- | --- | --- |")
    for label, (path, library) in variants.items():
        first = first_successes([path], library)
        cells = " / ".join(f"{((first > 0) & (first <= q)).mean():.2f}" for q in HSJ_GRID)
        print(f"| {label} | {cells} | {float(np.median(first[first > 0])):.0f} | {success_curve(first).mean():.3f} |")


def hsj_seeds_figure(groups: dict[str, dict[str, list[Path]]], out: Path) -> None:
    """Success against queries (every budget from 1 to 1,000) and the median distance, advlab against
    ART, pooled over the image sets and seeds of each group; prints the table of docs/blackbox.md."""
    fig, axes = plt.subplots(len(groups), 2, figsize=(12, 4 * len(groups)), squeeze=False)
    budgets = np.arange(1, 1001)
    for row, (title, files) in zip(axes, groups.items(), strict=True):
        print(f"\n{title}\n| library | image runs | success within {' / '.join(map(str, HSJ_GRID))} queries | "
              "median queries of the successes | mean |\n| --- | --- | --- | --- | --- |")
        for label, (paths, library, style) in files.items():
            if not paths:
                continue
            first, runs, distance = [], 0, []
            for path in paths:
                data = json.loads(path.read_text())
                for key, res in data["results"].items():
                    if key.startswith(f"hopskipjump/{library}/"):
                        first.extend(res["first_success"])
                        runs += 1
                        if library != "advlab" or "tiny_eps_run" in res:
                            distance.append([res["median_distance_at"][str(q)] for q in HSJ_GRID])
            first = np.asarray(first)
            print(hsj_table_row(label, first, runs // len(paths)))
            curve = [((first > 0) & (first <= q)).mean() for q in budgets]
            row[0].plot(budgets, curve, style, label=f"{label} (median {float(np.median(first[first > 0])):.0f})")
            if distance:
                row[1].plot(HSJ_GRID, np.mean(distance, 0), style, marker="o", ms=3, label=label)
        ours, theirs = files.get("advlab (now)"), files.get("ART")
        if ours and theirs and ours[0] and theirs[0]:
            a, r = first_successes(ours[0], "advlab"), first_successes(theirs[0], "art")
            print(f"advlab (now) below ART at budgets {below_windows(a, r)}, by at most "
                  f"{float((success_curve(r) - success_curve(a)).max()):.3f}")
            for path in ours[0]:
                print(f"  {path.name}: success by 1,000 advlab {(first_successes([path], 'advlab') > 0).mean():.2f}, "
                      f"ART {(first_successes([path], 'art') > 0).mean():.2f}")
        print("runs that broke each image by 1,000 queries, per image set (0-9 digits per image):")
        for label, (paths, library, _) in files.items():
            for path in paths:
                data = json.loads(path.read_text())
                runs = np.asarray([res["first_success"] for key, res in data["results"].items()
                                   if key.startswith(f"hopskipjump/{library}/")])
                print(f"  {path.name} {label}: " + "".join(str(int(c)) for c in (runs > 0).sum(0)))
        row[0].set_xlabel("queries per image")
        row[0].set_ylabel("success at Linf 0.3")
        row[0].set_title(f"{title}: HopSkipJump success")
        row[1].set_xlabel("queries per image")
        row[1].set_ylabel("median Linf distance (mean over runs)")
        row[1].set_title(f"{title}: HopSkipJump distance")
        for ax in row:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def substitute_runs_figure(runs: dict[str, Path], out: Path) -> None:
    fig, axes = plt.subplots(1, len(runs), figsize=(5.5 * len(runs), 4), squeeze=False)
    for ax, (title, run) in zip(axes[0], runs.items(), strict=True):
        metrics = json.loads((run / "metrics.json").read_text())
        h = metrics["history"]
        q = [r["oracle_queries"] for r in h]
        ax.plot(q, [r["substitute_accuracy"] for r in h], "o-", label="substitute accuracy")
        ax.plot(q, [r["transfer_rate"] for r in h], "s-", label="FGSM transfer rate")
        final = metrics["final"]
        ax.plot([final["oracle_labels"]], [final["transfer_rate"]], "r*", markersize=14,
                label=f"{final['craft']} on {'+'.join(final['substitutes'])}: {final['transfer_rate']:.2f}")
        ax.set_xscale("log")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("oracle labels (HTTP, labels only)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def http_methods_figure(paths: dict[str, Path], out: Path, extra: dict[str, list[dict]] | None = None) -> None:
    """Transfer rate per substitute and crafting attack (bench/substitute_http.py), one panel per data
    set and eps; extra: further result rows per data set (e.g. an `advlab substitute` run's final)."""
    panels = []
    for title, path in paths.items():
        data = json.loads(path.read_text())
        data["results"] += (extra or {}).get(title, [])
        for eps in data["eps"]:
            panels.append((title, data, eps))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4), squeeze=False)
    for ax, (title, data, eps) in zip(axes[0], panels, strict=True):
        rows = [r for r in data["results"] if r["eps"] == eps]
        subs = list(dict.fromkeys(r["substitute"] for r in rows))
        attacks = list(dict.fromkeys(r["attack"] for r in rows))
        width = 0.8 / len(attacks)
        for k, attack in enumerate(attacks):
            found = [(i, next((r["transfer_rate"] for r in rows if r["substitute"] == s and r["attack"] == attack),
                              None)) for i, s in enumerate(subs)]
            found = [(i, rate) for i, rate in found if rate is not None]
            bars = ax.bar([i + k * width for i, _ in found], [rate for _, rate in found], width,
                          label=attack, color=f"C{k}")
            ax.bar_label(bars, fmt="%.2f", fontsize=7)
        accuracy = {r["substitute"]: r["substitute_accuracy"] for r in rows}
        ax.set_xticks([i + width * (len(attacks) - 1) / 2 for i in range(len(subs))],
                      [f"{s}\n(acc {accuracy[s]:.2f})" for s in subs], fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.axhline(0.8, color="gray", ls=":", lw=1)
        eps_text = f"{eps:g}" if eps >= 0.1 else f"{round(eps * 255)}/255"
        ax.set_title(f"{title}: Linf eps {eps_text}, {data['labels']} oracle labels")
        ax.set_ylabel("transfer rate to the oracle")
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="docs/figures/blackbox")
    p.add_argument("--runs", default="", help="comma-separated TITLE=RUN_FOLDER of `advlab substitute` runs")
    p.add_argument("--only-hsj", action="store_true",
                   help="only the HopSkipJump figure over seeds and image sets (and its table on stdout)")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    peers = RESULTS / "blackbox_peers"
    sets = [f"mnist_cnn_standard{s}_hsj_seeds.json" for s in ("", "_offset100", "_offset200")]
    one_probe = [f"mnist_cnn_off{o}_hsj_one_probe.json" for o in (0, 100, 200)]
    groups = {"standard mnist_cnn, 75 images": {
        "advlab (now)": ([peers / f for f in sets if (peers / f).is_file()], "advlab", "-"),
        "advlab, one eps probe per iteration (before)": ([peers / f for f in one_probe if (peers / f).is_file()],
                                                         "advlab", ":"),
        "ART": ([peers / f for f in sets if (peers / f).is_file()], "art", "--")}}
    if (peers / "small_cnn_fast_hsj_seeds.json").is_file():
        robust = [peers / "small_cnn_fast_hsj_seeds.json"]
        groups["fast-trained small_cnn, 25 images"] = {"advlab (now)": (robust, "advlab", "-"),
                                                      "ART": (robust, "art", "--")}
    if groups["standard mnist_cnn, 75 images"]["advlab (now)"][0]:
        hsj_seeds_figure(groups, out / "peers_hsj_seeds.png")
    variants = sorted((peers / "hsj_variants").glob("mnist_cnn_off0_probes*_radius*.json"))
    if variants and (peers / sets[0]).is_file() and (peers / one_probe[0]).is_file():
        print("\nadvlab's variants on the first image set")
        rows = {"one eps probe per iteration, the paper's first radius (before)": (peers / one_probe[0], "advlab")}
        for k, radius, path in sorted((int(path.stem.split("_probes")[1].split("_radius")[0]),
                                       float(path.stem.split("_radius")[1]), path) for path in variants):
            probes = "1 eps probe" if k == 1 else f"{k} eps probes"
            rows[f"{probes} per iteration, first radius {radius:g}"] = (path, "advlab")
        rows["8 eps probes per iteration, first radius 0.1 (now)"] = (peers / sets[0], "advlab")
        rows["ART"] = (peers / sets[0], "art")
        hsj_variants_table(rows)
    if args.only_hsj:
        return
    sub = RESULTS / "substitute"
    if (sub / "mnist_rounds.json").is_file():
        rounds_figure(sub / "mnist_rounds.json", out / "mnist_substitute_rounds.png")
    transfers = {t: sub / f for t, f in (("MNIST", "mnist_transfer.json"), ("CIFAR-10", "cifar_transfer.json"))
                 if (sub / f).is_file()}
    if transfers:
        transfer_figure(transfers, out / "substitute_transfer_methods.png")
    peers = RESULTS / "blackbox_peers"
    names = (("standard mnist_cnn", "mnist_cnn_standard.json"),
             ("fast-trained small_cnn", "small_cnn_fast.json"))
    found = {t: peers / f for t, f in names if (peers / f).is_file()}
    if found:
        peers_figure(found, out / "peers_square_hsj.png")
    methods = {t: sub / f for t, f in (("MNIST", "http_mnist_methods.json"), ("CIFAR-10", "http_cifar_methods.json"))
               if (sub / f).is_file()}
    if methods:
        extra = {}
        run = sub / "http_mnist_5000" / "metrics.json"
        if run.is_file():  # the `advlab substitute` run with the mnist_cnn architecture in the ensemble
            final = json.loads(run.read_text())["final"]
            extra["MNIST"] = [{"substitute": " + ".join(final["substitutes"]), "attack": final["craft"], "eps": 0.3,
                               "transfer_rate": final["transfer_rate"],
                               "substitute_accuracy": final["substitute_accuracy"]}]
        http_methods_figure(methods, out / "substitute_http_methods.png", extra)
    if args.runs:
        runs = dict(item.split("=", 1) for item in args.runs.split(","))
        substitute_runs_figure({k: Path(v) for k, v in runs.items()}, out / "substitute_http_mnist_cifar.png")


if __name__ == "__main__":
    main()
