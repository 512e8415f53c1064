"""What the image-mode and size check costs before a folder is read: the headers of every file
(Pillow's Image.open reads the header only; no pixel is decoded), timed on a folder of N JPEGs.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/header_scan.py --work /tmp/advlab-headers --n 10000 \\
        --out bench/results/header_scan.json

The folder (10 classes of N/10 random-noise 256 x 256 JPEGs, quality 90) is made once in --work and
reused. Each repeat lists the folder and reads every header (advlab.data.folder.native_shape), so the
second and later repeats read from the page cache.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from advlab.data.folder import class_folders, listing, native_shape


def make_folder(root: Path, n: int, side: int) -> None:
    rng = np.random.default_rng(0)
    for c in range(10):
        folder = root / f"c{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n // 10):
            path = folder / f"{i:05d}.jpg"
            if not path.exists():
                Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(path, quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/advlab-headers")
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    root = Path(args.work) / f"{args.n}-{args.side}"
    make_folder(root, args.n, args.side)
    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        folders, labels, _ = class_folders(root)
        files = [p for p, _ in listing(root, folders, labels)]
        native_shape(files, 224, None)
        seconds.append(time.perf_counter() - start)
        print(f"{len(files)} files: headers read in {seconds[-1]:.2f} s", flush=True)
    result = {"files": len(files), "side": args.side, "seconds": seconds}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
