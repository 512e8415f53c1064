"""Folder data at full size: peak memory against folder size, and loading against an attack's speed.

Builds folders of CIFAR-10 test images upscaled (bicubic) to 256 x 256 JPEGs (quality 90), of
1,000 and 10,000 images, then in a fresh process per measurement reads each folder at
--image-size 224 (resize the shorter side to 256, centre crop 224):

- lazily (advlab.data.LazyImageFolder: decoded batch by batch by DataLoader workers), every image
  read once through ``batches()``;
- into memory (the reader small folders use), for contrast.

Peak resident memory of the reading process (ru_maxrss) and of its largest worker process
(RUSAGE_CHILDREN) are recorded, with the images per second of loading. Then loading is set against
the attack's own speed on the same 224-pixel images: PGD (10 steps) on advlab's cifar_cnn (the
"large" folder recipe's model) in images per second, one thread, and the loading rate with the same
number of decoding workers.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/data_loading.py --cifar ../shared/data/cifar10 \\
        --work /tmp/advlab-folders --out bench/results/data_loading.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def make_folder(cifar: Path, root: Path, n: int, side: int = 256) -> Path:
    """root/{train,test}/<class>/ with n test images (and 10 training images: the layout needs both)."""
    from PIL import Image

    if (root / "done").exists():
        return root
    sources = sorted((cifar / "test").glob("*/*.jpg"))
    rng = np.random.default_rng(0)
    picks = rng.choice(len(sources), size=n, replace=n > len(sources))
    for split, count in (("test", n), ("train", 10)):
        for i, index in enumerate(picks[:count]):
            src = sources[int(index)]
            target = root / split / src.parent.name / f"{i:06d}.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            with Image.open(src) as img:
                img.convert("RGB").resize((side, side), Image.BICUBIC).save(target, quality=90)
    (root / "done").write_text("ok\n")
    return root


def measure_reading(folder: str, lazy: bool, workers: int, batch: int) -> dict:
    """Read every test image of folder once at 224 (in this process) and report memory and speed."""
    import torch

    from advlab.data import load_dataset

    start = time.perf_counter()
    data = load_dataset(f"folder:{folder}", "test", image_size=224, lazy=lazy, workers=workers)
    total, seen = 0.0, 0
    for x, _ in data.batches(batch):
        total += float(x.sum())
        seen += len(x)
    seconds = time.perf_counter() - start
    fingerprint_start = time.perf_counter()
    fingerprint = data.fingerprint
    return {"images": seen, "lazy": lazy, "workers": workers, "batch": batch, "seconds": seconds,
            "images_per_second": seen / seconds, "fingerprint_seconds": time.perf_counter() - fingerprint_start,
            "fingerprint": fingerprint, "torch_threads": torch.get_num_threads(),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_worker_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def measure_attack(folder: str, n: int, steps: int) -> dict:
    """PGD (steps) on an untrained cifar_cnn at 224 pixels over n images of the folder: images per second.
    The weights do not change the cost of a pass; the first batch is read before the clock starts."""

    from advlab.attacks import PGD
    from advlab.data import load_dataset
    from advlab.models import create_model

    data = load_dataset(f"folder:{folder}", "test", image_size=224, lazy=True, workers=0).head(n)
    x, y = data.tensors()
    model = create_model("cifar_cnn", "cifar10", 3, 224, 10).eval()
    attack = PGD(eps=8 / 255, steps=steps)
    start = time.perf_counter()
    for i in range(0, n, 8):
        attack(model, x[i:i + 8], y[i:i + 8])
    seconds = time.perf_counter() - start
    return {"attack": f"PGD-{steps}", "model": "cifar_cnn (width 32) at 224 px", "images": n, "seconds": seconds,
            "images_per_second": n / seconds}


def child(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cifar", default="../shared/data/cifar10")
    parser.add_argument("--work", default="/tmp/advlab-folders")
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--attack-images", type=int, default=16)
    parser.add_argument("--out", default="bench/results/data_loading.json")
    parser.add_argument("--measure", nargs=4, metavar=("FOLDER", "LAZY", "WORKERS", "BATCH"))
    parser.add_argument("--attack", nargs=3, metavar=("FOLDER", "N", "STEPS"))
    args = parser.parse_args()
    if args.measure:
        folder, lazy, workers, batch = args.measure
        print(json.dumps(measure_reading(folder, lazy == "lazy", int(workers), int(batch))))
        return
    if args.attack:
        folder, n, steps = args.attack
        print(json.dumps(measure_attack(folder, int(n), int(steps))))
        return
    results = {"reading": [], "attack": None}
    sizes = [int(s) for s in args.sizes.split(",")]
    for n in sizes:
        folder = make_folder(Path(args.cifar), Path(args.work) / f"cifar-{n}", n)
        for lazy in ("lazy", "memory"):
            record = {"folder_images": n, **child(["--measure", str(folder), lazy, str(args.workers), "250"])}
            print(json.dumps(record), flush=True)
            results["reading"].append(record)
    smallest = Path(args.work) / f"cifar-{sizes[0]}"
    results["attack"] = child(["--attack", str(smallest), str(args.attack_images), "10"])
    print(json.dumps(results["attack"]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
