"""The substitute attack through the HTTP API, with several substitutes, crafting attacks and eps from
one labeled set: how far each transfer-enhancing method carries, on MNIST or CIFAR-10.

    PYTHONPATH=src OMP_NUM_THREADS=1 .venv/bin/python bench/substitute_http.py --model CHECKPOINT \
        --dataset cifar10 --data-dir ../shared/data --labels 5000 --substitutes lenet,cifar_cnn --epochs 4 \
        --eps 8/255,16/255 --n-eval 300 --out bench/results/substitute/http_cifar_methods.json

The oracle runs as `advlab serve` would (create_app, labels only, bearer tokens, a per-client query
budget) on a loopback port in this process. The attacker's client (its own token and a client-side
budget of --labels images) labels the first --labels test images, the attacker's unlabeled pool;
substitutes of each listed architecture are trained on those labels only (0 augmentation rounds:
the Jacobian rounds add no information on these oracles, docs/blackbox.md). Then for each eps,
each substitute and their ensemble (mean logits), and each crafting attack (FGSM; PGD-10, step
eps/4; MI-FGSM-10 with input diversity p 0.5), the transfer rate is the share of the evaluation
images (the next --n-eval test images) that the oracle classifies correctly and misclassifies after
the attack. Evaluation queries go through a second client with its own token: they are not the
attacker's and are not counted in --labels.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from fractions import Fraction
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from advlab.attacks import FGSM, PGD  # noqa: E402
from advlab.attacks.blackbox import HttpOracle  # noqa: E402
from advlab.attacks.blackbox.substitute import SubstituteEnsemble, SubstituteTraining  # noqa: E402
from advlab.attacks.mifgsm import MIFGSM  # noqa: E402
from advlab.data import load_dataset  # noqa: E402
from advlab.models import load_checkpoint  # noqa: E402
from advlab.serve import create_app, running_server  # noqa: E402


def crafting_attacks(eps: float) -> dict:
    return {"fgsm": FGSM(eps=eps, norm="linf"),
            "pgd": PGD(eps=eps, steps=10, step_size=0.25 * eps, norm="linf", random_start=False),
            "mifgsm-di": MIFGSM(eps=eps, steps=10, decay=1.0, diversity=0.5)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="the oracle's checkpoint")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--labels", type=int, default=5000, help="oracle labels the attacker may ask for")
    p.add_argument("--substitutes", default="lenet", help="comma-separated architectures")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--eps", default="0.3", help="comma-separated; fractions such as 8/255 allowed")
    p.add_argument("--n-eval", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    eps_list = [float(Fraction(e)) for e in args.eps.split(",")]
    model, meta = load_checkpoint(args.model)
    test = load_dataset(args.dataset, "test", args.data_dir)
    pool_x, _ = test.subset(slice(0, args.labels)).tensors()
    eval_x, eval_y = test.subset(slice(args.labels, args.labels + args.n_eval)).tensors()
    names = [a.strip() for a in args.substitutes.split(",") if a.strip()]
    evaluations = len(eps_list) * (len(names) + (len(names) > 1)) * 3 * 2 * args.n_eval + len(names) * args.n_eval
    app = create_app(model, test.classes, labels_only=True, token=["attacker", "evaluator"],
                     query_budget=max(args.labels, evaluations), input_shape=tuple(test.shape),
                     max_batch=64)  # bodies under 1 MiB: parsed in the server process, no worker to start
    out = {"oracle": str(args.model), "oracle_test_accuracy": meta.get("test_accuracy"), "dataset": args.dataset,
           "labels": args.labels, "substitutes": names, "epochs": args.epochs, "n_eval": args.n_eval,
           "eval_images": [args.labels, args.labels + args.n_eval], "eps": eps_list, "results": []}
    start = time.perf_counter()
    with running_server(app) as url:
        # generous timeouts: the server shares a busy CPU with the substitutes' training
        attacker = HttpOracle(url, token="attacker", budget=args.labels, timeout=600)
        evaluator = HttpOracle(url, token="evaluator", timeout=600)
        trainer = SubstituteTraining(architecture=names[0], dataset=args.dataset, rounds=0, epochs=args.epochs,
                                     seed=args.seed)
        first, history = trainer.train(attacker, pool_x, progress=True)
        data_x, data_y = trainer.training_set
        generator = torch.Generator().manual_seed(args.seed)
        members = {names[0]: first}
        for name in names[1:]:
            members[name] = trainer.fit(name, data_x, data_y, attacker.num_classes or 10, generator)
        if len(members) > 1:
            members[" + ".join(names)] = SubstituteEnsemble(list(members.values()))
        out["oracle_labels_used"] = attacker.used
        out["training_seconds"] = time.perf_counter() - start
        for eps in eps_list:
            for sub_name, sub in members.items():
                for attack_name, attack in crafting_attacks(eps).items():
                    r = trainer.evaluate(sub, eval_x, eval_y, evaluator, attack=attack)
                    r.update({"eps": eps, "substitute": sub_name, "attack": attack_name})
                    out["results"].append(r)
                    print(f"eps {eps:.4f} {sub_name:>20} {attack_name:>10}: substitute accuracy "
                          f"{r['substitute_accuracy']:.3f}, transfer {r['transfer_rate']:.3f}", flush=True)
        attacker.close()
        evaluator.close()
    out["seconds"] = time.perf_counter() - start
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
