"""Paper anchors for the white-box attacks, scaled down for a CPU (see docs/attacks.md).

    .venv/bin/python bench/whitebox_anchors.py [--n 20]

- Szegedy et al. 2014: box-constrained L-BFGS on an MNIST fully connected net FC100-100-10, mean
  minimal distortion as RMS per pixel (paper: about 0.058-0.065).
- Carlini & Wagner 2017: targeted C&W L2 on the MNIST CNN, mean L2 over random targets (paper: 1.36
  undefended, 9 binary-search steps x 10,000 iterations; here 5 x 200).
- Goodfellow et al. 2015: FGSM eps 0.25 on MNIST softmax regression (paper: 99.9% error, outputs not
  clipped; ours are clipped to [0, 1]); fooling images from Gaussian noise (paper: 93.4% with > 50%
  confidence on CIFAR-10; we report MNIST, and CIFAR-10 when the cifar_cnn is in the cache).
Writes bench/results/whitebox_anchors.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from advlab.attacks import FGSM, LBFGS, CarliniWagnerL2, FoolingImages  # noqa: E402
from advlab.data import load_dataset  # noqa: E402
from advlab.training import cached_checkpoint_path, default_config, train_model  # noqa: E402


def random_targets(y: torch.Tensor, classes: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (y + torch.randint(1, classes, (len(y),), generator=gen)) % classes


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20, help="test images per attack (default: 20)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "whitebox_anchors.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    out: dict = {"n": args.n}
    test = load_dataset("mnist", "test")
    x, y = test.tensors(args.n)
    pixels = x[0].numel()

    t = time.perf_counter()
    mlp, meta, _, _ = train_model(default_config("mnist", model="mlp", model_extra={"hidden": [100, 100]}), cpu,
                                  progress=False)
    target = random_targets(y, 10)
    res = LBFGS(binary_search_steps=6, max_iter=100)(mlp, x, y, target=target)
    ok = res.success & res.clean_correct
    rms = res.norms["l2"][ok] / math.sqrt(pixels)
    out["szegedy_lbfgs_fc100_100"] = {"test_accuracy": meta["test_accuracy"], "success_rate": res.success_rate,
                                      "mean_rms_distortion": rms.mean().item(), "paper": "0.058-0.065",
                                      "seconds": time.perf_counter() - t}
    print(out["szegedy_lbfgs_fc100_100"], flush=True)

    t = time.perf_counter()
    cnn, meta, _, _ = train_model(default_config("mnist"), cpu, progress=False)
    res = CarliniWagnerL2(steps=200, binary_search_steps=5, initial_const=1.0)(cnn, x, y, target=target)
    ok = res.success & res.clean_correct
    out["cw_l2_targeted_mnist_cnn"] = {"success_rate": res.success_rate, "mean_l2": res.norms["l2"][ok].mean().item(),
                                       "median_l2": res.norms["l2"][ok].median().item(), "paper_mean_l2": 1.36,
                                       "setting": "5 binary-search steps x 200 Adam steps, lr 0.01, kappa 0",
                                       "seconds": time.perf_counter() - t}
    print(out["cw_l2_targeted_mnist_cnn"], flush=True)

    lin, meta, _, _ = train_model(default_config("mnist", model="linear"), cpu, progress=False)
    xs, ys = test.tensors(1000)
    res = FGSM(eps=0.25)(lin, xs, ys)
    out["goodfellow_fgsm_softmax_regression"] = {"test_accuracy": meta["test_accuracy"], "n": 1000,
                                                 "error_rate": 1 - res.robust_accuracy, "paper": 0.999}
    print(out["goodfellow_fgsm_softmax_regression"], flush=True)

    fool = {}
    for name, model, shape in [("mnist_cnn", cnn, (1, 28, 28))] + _cifar():
        eps = 0.25 if name == "mnist_cnn" else 0.1
        for steps in (1, 5):
            r = FoolingImages(eps=eps, steps=steps)(model, shape, 10, 50)
            fool[f"{name} Linf eps {eps}, {steps} step(s)"] = r.summary()
    out["goodfellow_fooling_images"] = {"paper": "93.4% on CIFAR-10 (> 50% confidence)", "runs": fool}
    print({k: v["share_fooled"] for k, v in fool.items()}, flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    return 0


def _cifar():
    config = default_config("cifar10")
    if not cached_checkpoint_path(config).exists():
        return []
    shared_data = Path(__file__).resolve().parents[2] / "shared" / "data"
    model, _, _, _ = train_model(config, torch.device("cpu"), data_dir=shared_data, progress=False)
    return [("cifar_cnn", model, (3, 32, 32))]


if __name__ == "__main__":
    raise SystemExit(main())
