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
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
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
