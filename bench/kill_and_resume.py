"""Show two fixes of issue 17 with the real command line (docs/hostile-input.md):

1. kill and resume: `advlab train` is SIGKILLed after its first epoch's state is written, run again
   (it says it resumes), and its weights are compared, bit for bit, with an uninterrupted run's;
2. the cache key covers the data: a copy of MNIST whose training labels are shifted by one, then the
   canonical MNIST: the second run trains its own model instead of serving the first from the cache.

Usage: python bench/kill_and_resume.py [--epochs 4] [--train-subset 3000]
Runs in a temporary folder with its own caches; about a minute on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from advlab.data.mnist import embedded_dir


def advlab(argv: list[str], cache: Path, cwd: Path, wait: bool = True):
    env = {**os.environ, "ADVLAB_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "advlab", *argv]
    if not wait:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"advlab {' '.join(argv)} failed:\n{done.stderr[-2000:]}")
    return done.stdout + done.stderr


def kill_and_resume(work: Path, epochs: int, subset: int) -> None:
    argv = ["train", "--model", "lenet", "--epochs", str(epochs), "--train-subset", str(subset), "--batch-size", "64",
            "--no-progress"]
    cache = work / "cache-killed"
    proc = advlab([*argv, "--out", str(work / "killed")], cache, work, wait=False)
    began = time.monotonic()
    while proc.poll() is None and not list((cache / "models").glob("*.state.safetensors")):
        time.sleep(0.01)
    if proc.poll() is not None:
        sys.exit("the run ended before it could be killed; raise --epochs")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    print(f"killed after {time.monotonic() - began:.1f} s; left behind: "
          f"{sorted(p.name for p in work.glob('.killed.partial-*'))}")
    out = advlab([*argv, "--out", str(work / "killed")], cache, work)
    print("rerun: " + next(line for line in out.splitlines() if line.startswith("resuming")))
    print(f"partial folders after the rerun: {sorted(p.name for p in work.glob('.killed.partial-*'))}")
    advlab([*argv, "--out", str(work / "whole")], work / "cache-whole", work)
    a, b = (json.loads((work / name / "metrics.json").read_text()) for name in ("whole", "killed"))
    wa, wb = load_file(a["checkpoint"]), load_file(b["checkpoint"])
    same = wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    print(f"uninterrupted: test accuracy {a['test_accuracy']:.4f}; killed and resumed after epoch "
          f"{b['resumed_after_epoch']}: {b['test_accuracy']:.4f}; weights identical: {same}")


def cache_key_covers_data(work: Path) -> None:
    copy = work / "mnist-shifted"
    copy.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(embedded_dir() / name, copy)
    raw = bytearray(gzip.decompress((embedded_dir() / "train-labels-idx1-ubyte.gz").read_bytes()))
    raw[8:] = bytes((label + 1) % 10 for label in raw[8:])  # every training label shifted by one
    (copy / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(raw)))
    argv = ["train", "--model", "linear", "--epochs", "1", "--train-subset", "2000", "--no-progress"]
    cache = work / "cache-data"
    for label, extra in (("--data-dir shifted copy", ["--data-dir", str(copy)]), ("canonical MNIST", [])):
        out = advlab([*argv, *extra, "--out", str(work / label.replace(" ", "_"))], cache, work)
        data = next(line for line in out.splitlines() if line.startswith("data:"))
        result = next(line for line in out.splitlines() if "test accuracy" in line)
        print(f"{label}: {result}\n    {data}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train-subset", type=int, default=3000)
    parser.add_argument("--part", choices=("all", "resume", "cache-key"), default="all")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="advlab-kill-") as tmp:
        work = Path(tmp)
        if args.part in ("all", "resume"):
            kill_and_resume(work, args.epochs, args.train_subset)
        if args.part in ("all", "cache-key"):
            cache_key_covers_data(work)


if __name__ == "__main__":
    main()
