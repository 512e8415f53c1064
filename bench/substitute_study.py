"""Why the substitute of Papernot et al. 2017 does (or does not) improve round by round, and which
crafting method makes its examples transfer. Writes one JSON under bench/results/substitute/.

    PYTHONPATH=src OMP_NUM_THREADS=1 .venv/bin/python bench/substitute_study.py --model CHECKPOINT \
        --part rounds --n-eval 500 --out bench/results/substitute/mnist_rounds.json
    PYTHONPATH=src OMP_NUM_THREADS=1 .venv/bin/python bench/substitute_study.py --model CHECKPOINT \
        --part transfer --n-eval 500 --out bench/results/substitute/mnist_transfer.json

Part "rounds": the substitute's accuracy per augmentation round under several set-ups, on the same
150 seeds (test images 0-149) and the same oracle labels budget; evaluation images are test images
150 onwards, labeled with their true labels, queried on a separate uncounted oracle:

- adam: advlab's previous default (Adam 1e-3, batch 32, 10 epochs per round), Jacobian of the softmax;
- sgd: the paper's training (SGD, learning rate 1e-2, momentum 0.9, batch 128, 10 epochs per round);
- sgd-random: the same, but new points step along a random sign instead of the Jacobian's (same
  lambda, same number of oracle labels): what the Jacobian adds over any perturbation;
- sgd-repeat: no new points; the seeds repeated 2^rho times: what more gradient steps alone add;
- adam-logits-tau3: Adam, logit Jacobian, the periodic step size with tau 3.

It also counts, for the softmax Jacobian, the share of exactly-zero entries (sign 0: no step).

Part "transfer": one labeled set (150 seeds, 6 rounds with tau 3, 9,600 labels), several
substitutes trained on it, several crafting attacks at Linf eps 0.3; success = the share of the
oracle's correctly classified evaluation images the oracle misclassifies.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from advlab.attacks import FGSM, PGD  # noqa: E402
from advlab.attacks.blackbox import LocalOracle  # noqa: E402
from advlab.attacks.blackbox.substitute import (  # noqa: E402
    SubstituteEnsemble,
    SubstituteTraining,
    jacobian_augmentation,
)
from advlab.attacks.mifgsm import MIFGSM  # noqa: E402
from advlab.cli.common import resolve_model  # noqa: E402
from advlab.data import load_dataset  # noqa: E402

SETUPS = {
    "adam": {"optimizer": "adam", "lr": 1e-3, "batch_size": 32},
    "sgd": {"optimizer": "sgd", "lr": 1e-2, "batch_size": 128},
    "sgd-random": {"optimizer": "sgd", "lr": 1e-2, "batch_size": 128, "augment": "random"},
    "sgd-repeat": {"optimizer": "sgd", "lr": 1e-2, "batch_size": 128, "augment": "repeat"},
    "adam-logits-tau3": {"optimizer": "adam", "lr": 1e-3, "batch_size": 32, "jacobian": "logits", "tau": 3},
}


class RandomSignTraining(SubstituteTraining):
    """Control: new points at x + lambda * (a random sign per pixel) instead of the Jacobian's sign."""

    def augment(self, substitute, data_x, data_y, rho, generator):
        signs = torch.randint(0, 2, data_x.shape, generator=generator).to(data_x) * 2 - 1
        return (data_x + self.step_size(rho) * signs).clamp(0.0, 1.0)


class RepeatTraining(SubstituteTraining):
    """Control: no new information, the training set is the seeds repeated (labels reused, no query)."""

    def train(self, oracle, seeds, eval_x=None, eval_y=None, eval_oracle=None, device="cpu", progress=True):
        generator = torch.Generator().manual_seed(self.seed)
        torch.manual_seed(self.seed)
        data_x, data_y = seeds, oracle.labels(seeds)
        history = []
        for rho in range(self.rounds + 1):
            rep = 2 ** rho
            sub = self.fit(self.architecture, data_x.repeat(rep, 1, 1, 1), data_y.repeat(rep), 10, generator)
            record = {"round": rho, "oracle_queries": len(seeds), "training_set": rep * len(seeds)}
            record.update(self.evaluate(sub, eval_x, eval_y, eval_oracle))
            history.append(record)
        return sub, history


def zero_sign_share(trainer: SubstituteTraining, oracle, seeds: torch.Tensor) -> dict:
    """After round 0: the share of exactly-zero entries of the Jacobian row (softmax and logits) on
    the seeds, the share of seeds whose whole row is zero (a saturated softmax would make the new
    point the seed itself), and the share of pixels the [0, 1] box keeps from moving at lambda."""
    generator = torch.Generator().manual_seed(0)
    labels = oracle.labels(seeds)
    sub = trainer.fit(trainer.architecture, seeds, labels, 10, generator)
    out = {}
    for output in ("probs", "logits"):
        x = seeds.clone().requires_grad_(True)
        scores = sub(x)
        if output == "probs":
            scores = scores.softmax(1)
        (grad,) = torch.autograd.grad(scores.gather(1, labels[:, None]).sum(), x)
        out[f"{output}_zero_entries"] = float((grad == 0).float().mean())
        out[f"{output}_all_zero_images"] = float((grad.flatten(1) == 0).all(1).float().mean())
    moved = jacobian_augmentation(sub, seeds, labels, trainer.lam)
    out["entries_held_by_the_box"] = float(((moved - seeds).abs() < 1e-7).float().mean())
    return out


def part_rounds(args, model, seeds, eval_x, eval_y) -> dict:
    out = {}
    for name, cfg in SETUPS.items():
        cfg = dict(cfg)
        kind = cfg.pop("augment", "jacobian")
        cls = {"jacobian": SubstituteTraining, "random": RandomSignTraining, "repeat": RepeatTraining}[kind]
        trainer = cls(architecture=args.substitute, rounds=args.rounds, lam=0.1, epochs=10, seed=args.seed, **cfg)
        oracle, eval_oracle = LocalOracle(model, labels_only=True), LocalOracle(model, labels_only=True)
        start = time.perf_counter()
        _, history = trainer.train(oracle, seeds, eval_x, eval_y, eval_oracle, progress=False)
        out[name] = {"config": {**cfg, "augment": kind}, "history": history, "oracle_labels": oracle.used,
                     "seconds": time.perf_counter() - start}
        print(name, " ".join(f"{h['substitute_accuracy']:.3f}/{h['transfer_rate']:.3f}" for h in history),
              f"labels {oracle.used}", flush=True)
    share = zero_sign_share(SubstituteTraining(architecture=args.substitute, epochs=10), LocalOracle(model), seeds)
    out["jacobian_zeros_after_round0"] = share
    print("zero Jacobian entries after round 0:", share)
    return out


def part_transfer(args, model, seeds, eval_x, eval_y) -> dict:
    oracle = LocalOracle(model, labels_only=True)
    trainer = SubstituteTraining(architecture="mlp", rounds=args.rounds, lam=0.1, epochs=10, seed=args.seed,
                                 jacobian="logits", tau=3)
    mlp, history = trainer.train(oracle, seeds, progress=False)
    data_x, data_y = trainer.training_set
    labels = oracle.used
    generator = torch.Generator().manual_seed(args.seed)
    subs = {"mlp": mlp}
    for arch in args.cnn.split(","):
        start = time.perf_counter()
        subs[arch] = trainer.fit(arch, data_x, data_y, 10, generator)
        print(f"trained {arch} in {time.perf_counter() - start:.0f} s", flush=True)
    subs["ensemble"] = SubstituteEnsemble([subs[k] for k in ["mlp", *args.cnn.split(",")]])
    eval_oracle = LocalOracle(model, labels_only=True)
    attacks = {"fgsm": FGSM(eps=0.3), "pgd-10": PGD(eps=0.3, steps=10, step_size=0.075, random_start=False),
               "mifgsm-10": MIFGSM(eps=0.3, steps=10),
               "mifgsm-10-di": MIFGSM(eps=0.3, steps=10, diversity=0.5, min_scale=0.8)}
    rows = []
    for sub_name, sub in subs.items():
        for attack_name, attack in attacks.items():
            r = trainer.evaluate(sub, eval_x, eval_y, eval_oracle, attack=attack)
            rows.append({"substitute": sub_name, "attack": attack_name, **r})
            print(f"{sub_name:10s} {attack_name:14s} substitute acc {r['substitute_accuracy']:.3f} transfer "
                  f"{r['transfer_rate']:.3f}", flush=True)
    return {"oracle_labels": labels, "training_set": len(data_x), "mlp_history": history, "rows": rows}


def part_labels(args, model, seeds, eval_x, eval_y) -> dict:
    """Share of each round's new points whose oracle label differs from their parent's (Adam, MLP)."""
    oracle = LocalOracle(model, labels_only=True)
    trainer = SubstituteTraining(architecture=args.substitute, rounds=args.rounds, epochs=10, seed=args.seed)
    trainer.train(oracle, seeds, progress=False)
    _, y = trainer.training_set
    n, changed = len(seeds), []
    while n < len(y):  # S_{r+1} = S_r followed by the augmented S_r: the parent of point n + i is i
        changed.append(float((y[n:2 * n] != y[:n]).float().mean()))
        n *= 2
    print("new points labeled differently from their parent, per round:", changed)
    return {"label_changed_share": changed, "oracle_labels": oracle.used}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="oracle: checkpoint or cached architecture name")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--part", choices=("rounds", "transfer", "labels"), required=True)
    p.add_argument("--substitute", default="mlp")
    p.add_argument("--cnn", default="lenet", help="CNN substitutes for part transfer (comma-separated)")
    p.add_argument("--seeds", type=int, default=150)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--n-eval", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    args.image_size, args.channels, args.device = 32, 3, "cpu"
    model, meta = resolve_model(args.model, args, torch.device("cpu"))
    test = load_dataset(args.dataset, "test", data_dir=args.data_dir)
    seeds, _ = test.subset(slice(0, args.seeds)).tensors()
    eval_x, eval_y = test.subset(slice(args.seeds, args.seeds + args.n_eval)).tensors()
    result = {"oracle": args.model, "oracle_test_accuracy": meta.get("test_accuracy"), "seeds": args.seeds,
              "rounds": args.rounds, "n_eval": args.n_eval, "dataset": args.dataset}
    part = {"rounds": part_rounds, "transfer": part_transfer, "labels": part_labels}[args.part]
    result[args.part] = part(args, model, seeds, eval_x, eval_y)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
