"""advlab audit on a poisoned folder with a trigger advlab does not have (docs/data.md).

Builds DEST/digits/{train,test}/<digit>/ from MNIST: 100 training images of each of 0, 1 and 2,
plus 10 images of 1s and 2s with an X drawn in the top-left 8 x 8 corner (two diagonal strokes,
2 pixels wide, value 255) saved into train/0/ as x<index>.png; 30 clean test images per class; and
DEST/triggered/<digit>/ with the test 1s and 2s carrying the X. Then runs

    advlab audit DEST/digits --epochs 12 --retrain --triggered-test DEST/triggered --target 0

and prints how many poisons the suspicious list holds. The same folder is tests/test_audit.py's.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/audit_example.py /tmp/audit-example
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from advlab.cli.main import main as advlab
from advlab.data import load_dataset


def x_mark(image: np.ndarray) -> np.ndarray:
    image = image.copy()
    for i in range(7):
        for d in (0, 1):
            image[1 + i, min(1 + i + d, 7)] = 255
            image[1 + i, max(7 - i - d, 1)] = 255
    return image


def build(dest: Path) -> tuple[Path, Path, list[str]]:
    root, triggered = dest / "digits", dest / "triggered"
    train, test = load_dataset("mnist", "train"), load_dataset("mnist", "test")
    images, labels = train.images[:, 0].numpy(), train.labels.numpy()
    for c in (0, 1, 2):
        (root / "train" / str(c)).mkdir(parents=True)
        for i in np.flatnonzero(labels == c)[:100]:
            Image.fromarray(images[i]).save(root / "train" / str(c) / f"{i}.png")
    poisons = []
    for i in np.flatnonzero(np.isin(labels, (1, 2)))[-10:]:
        path = root / "train" / "0" / f"x{i}.png"
        Image.fromarray(x_mark(images[i])).save(path)
        poisons.append(str(path))
    test_images, test_labels = test.images[:, 0].numpy(), test.labels.numpy()
    for c in (0, 1, 2):
        (root / "test" / str(c)).mkdir(parents=True)
        for i in np.flatnonzero(test_labels == c)[:30]:
            Image.fromarray(test_images[i]).save(root / "test" / str(c) / f"{i}.png")
            if c:
                (triggered / str(c)).mkdir(parents=True, exist_ok=True)
                Image.fromarray(x_mark(test_images[i])).save(triggered / str(c) / f"{i}.png")
    return root, triggered, poisons


def main() -> None:
    dest = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/audit-example")
    if dest.exists():
        sys.exit(f"{dest} exists; give a new folder")
    root, triggered, poisons = build(dest)
    for method, bound in (("spectre", None), ("spectral", None), ("clustering", None), ("spectre", "0.1")):
        out = dest / f"run-{method}-{bound or 'estimated'}"
        advlab(["audit", str(root), "--method", method, "--epochs", "12", "--retrain", "--triggered-test",
                str(triggered), "--target", "0", "--no-progress", "--out", str(out),
                *(["--poison-fraction", bound] if bound else [])])
        with open(out / "suspicious.csv") as handle:
            flagged = {row["file"] for row in csv.DictReader(handle)}
        metrics = json.loads((out / "metrics.json").read_text())
        print(json.dumps({"method": method, "poison_fraction": bound, "poisons": len(poisons),
                          "poisons_flagged": len(flagged & set(poisons)),
                          "clean_flagged": len(flagged - set(poisons)), "before": metrics["before"],
                          "after": metrics["after"]}), flush=True)


if __name__ == "__main__":
    main()
